"""`reauthorizationRequired` lifecycle notifications that arrive unprompted before a subscription expires.

Graph's lifecycle documentation: before a subscription expires (or its access token does), Graph sends an
authorization challenge to the `lifecycleNotificationUrl`; "the flow of change notifications may continue
for a while ... eventually change notification delivery pauses, until you take the required action", and
changes made while paused are lost. Answering means `POST /subscriptions/{id}/reauthorize` or renewing
with a PATCH. Its illustrative code challenges every 15 minutes in the last hour. Only subscriptions with
a `lifecycleNotificationUrl` are challenged (the others get no lifecycle notifications at all).

Knobs, all on the simulator's clock: `reauth_lead_s` (first challenge that long before expiry; <= 0 off),
`reauth_repeat_s` (again while inside the lead, answered or not, as Graph's code does) and
`reauth_pause_after_s` (a challenge unanswered that long pauses the subscription's change
notifications until it is answered; < 0 never). A challenge sent by hand through
`POST /_sim/subscriptions/{id}/lifecycle` counts as one too.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from graphsim.clock import SimClock, parse_graph_time
from graphsim.config import SimConfig
from graphsim.stats import Stats
from graphsim.store import TenantStore


@dataclass
class Challenge:
    """One subscription's challenges: when the last went out, and since when one waits for an answer."""

    last_sent: datetime
    pending_since: datetime | None


class Reauthorizer:
    """Sends the challenges that fall due and says which subscriptions are paused for want of an answer."""

    def __init__(self, store: TenantStore, config: SimConfig, clock: SimClock,
                 send: Callable[[dict[str, Any], str], bool], stats: Stats) -> None:
        self.stats = stats
        self.store = store
        self.config = config
        self.clock = clock
        self.send = send                      # queues a lifecycle notification; False without a lifecycle URL
        self.challenges: dict[str, Challenge] = {}

    def tick(self) -> int:
        """Challenge every subscription inside the lead whose last challenge is older than the repeat
        interval; returns how many were sent."""
        lead = self.config.reauth_lead_s
        if lead <= 0:
            return 0
        now = self.clock.utcnow()
        sent = 0
        for sub in list(self.store.subscriptions.values()):
            expiry = parse_graph_time(sub["expirationDateTime"])
            if not sub.get("lifecycleNotificationUrl") or expiry <= now or expiry - now > timedelta(seconds=lead):
                continue
            last = self.challenges.get(sub["id"])
            if last is not None and now - last.last_sent < timedelta(seconds=max(1.0, self.config.reauth_repeat_s)):
                continue
            if self.send(sub, "reauthorizationRequired"):   # the sender notes the challenge (`challenged`)
                self.stats.notifications["reauth_challenges"] += 1
                sent += 1
        return sent

    def challenged(self, sub_id: str) -> None:
        """Note a challenge sent now; the wait for an answer starts at the first unanswered one."""
        now = self.clock.utcnow()
        last = self.challenges.get(sub_id)
        if last is None:
            self.challenges[sub_id] = Challenge(last_sent=now, pending_since=now)
            return
        last.last_sent = now
        if last.pending_since is None:
            last.pending_since = now

    def answered(self, sub_id: str) -> None:
        """The app reauthorized or renewed: change notifications flow again."""
        last = self.challenges.get(sub_id)
        if last is not None:
            last.pending_since = None

    def paused(self, sub_id: str) -> bool:
        """True while a challenge has gone unanswered for `reauth_pause_after_s` or longer."""
        last = self.challenges.get(sub_id)
        return last is not None and self._paused(last, self.clock.utcnow())

    def _paused(self, last: Challenge, now: datetime) -> bool:
        wait = self.config.reauth_pause_after_s
        return last.pending_since is not None and wait >= 0 and now - last.pending_since >= timedelta(seconds=wait)
