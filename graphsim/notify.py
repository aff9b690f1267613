"""Change notifications for `/users` subscriptions: validation handshake, batched delivery, lifecycle events.

A user change queues one notification per matching subscription. Queued notifications wait
`notify_batch_window_s`, are grouped by notification URL (one POST can mix subscriptions, as Graph's
do) in POSTs of at most `notify_max_per_post`, and are delivered in the background: a write never waits
for a webhook. A non-2xx answer or a timeout (`notify_timeout_s`) is retried `notify_retry_count` times
with doubling backoff from `notify_retry_backoff_s`, never past `notify_retry_window_s` after the first
attempt (Graph: "for up to 4 hours"), then counted as failed. `notify_drop_rate` loses
notifications on purpose ("Graph lost it"); `notify_paused` holds them until unpaused.

Each notification URL is judged as Graph does (`graphsim.endpoint_health`): a slow or failing endpoint's
notifications are held `notify_throttle_delay_s` on the simulator's clock, then dropped once it gets worse.
`reauthorizationRequired` challenges before expiry, and the pause of a subscription whose challenge goes
unanswered, come from `graphsim.reauth`. Only loopback URLs are ever contacted.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from graphsim.clock import SimClock, parse_graph_time
from graphsim.config import SimConfig
from graphsim.endpoint_health import DROP, SLOW, EndpointHealth
from graphsim.reauth import Reauthorizer
from graphsim.stats import Stats
from graphsim.store import TenantStore, User

log = logging.getLogger(__name__)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def is_loopback_url(url: str) -> bool:
    """True for an http(s) URL on a loopback host: the only places the simulator will ever call."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and (parts.hostname or "").lower() in LOOPBACK_HOSTS


class Notifier:
    """Queues, batches and delivers change and lifecycle notifications."""

    def __init__(self, store: TenantStore, config: SimConfig, stats: Stats, clock: SimClock | None = None) -> None:
        self.store = store
        self.config = config
        self.stats = stats
        self.clock = clock or SimClock()
        self.health: dict[str, EndpointHealth] = {}
        # (due on the clock, url, items, counter, first attempt): held for a throttled endpoint
        self.delayed: list[tuple[float, str, list[dict[str, Any]], str, float]] = []
        self.reauth = Reauthorizer(store, config, self.clock, self.lifecycle, stats)
        self.rng = random.Random()
        self.pending: list[tuple[str, dict[str, Any]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.enabled = True     # bulk operations may switch notifications off for one call
        store.listeners.append(self.on_user_change)

    def session(self) -> aiohttp.ClientSession:
        """The shared client session (created on first use, inside the running loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=50))
        return self._session

    async def close(self) -> None:
        """Cancel background deliveries and close the client session."""
        if self._timer:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ validation
    async def validate(self, url: str) -> bool:
        """Graph's handshake: POST `url?validationToken=…`; valid only for 200, text/plain, body == token."""
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        target = f"{url}{'&' if urlsplit(url).query else '?'}validationToken={quote(token, safe='')}"
        self.stats.notifications["validations"] += 1
        try:
            timeout = aiohttp.ClientTimeout(total=self.config.validation_timeout_s)
            async with self.session().post(target, data=b"", headers={"Content-Type": "text/plain; charset=utf-8"},
                                           timeout=timeout) as resp:
                body = await resp.read()
                ctype = resp.headers.get("Content-Type", "")
                ok = resp.status == 200 and ctype.split(";")[0].strip().lower() == "text/plain" \
                    and body.decode("utf-8", "replace") == token
                if not ok:
                    log.info("validation of %s failed: status %s, content type %r", url, resp.status, ctype)
                return ok
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("validation of %s failed: %s", url, type(exc).__name__)
            return False

    # ------------------------------------------------------------------ change notifications
    def on_user_change(self, user: User, change_type: str) -> None:
        """Store listener: queue a notification for every live subscription that covers this user and change."""
        if not self.enabled or not self.store.subscriptions:
            return
        now = self.clock.utcnow()
        for sub in self.store.subscriptions.values():
            if change_type not in sub["changeType"].split(","):
                continue
            resource = sub["resource"].strip("/").lower()
            if resource != "users" and resource != f"users/{user.key}":
                continue
            if parse_graph_time(sub["expirationDateTime"]) <= now:
                continue
            if self.reauth.paused(sub["id"]):       # an unanswered challenge: Graph pauses, the change is lost
                self.stats.notifications["paused_lost"] += 1
                continue
            if self.config.notify_drop_rate > 0 and self.rng.random() < self.config.notify_drop_rate:
                self.stats.notifications["dropped"] += 1
                continue
            self.pending.append((sub["notificationUrl"], {
                "subscriptionId": sub["id"], "subscriptionExpirationDateTime": sub["expirationDateTime"],
                "clientState": sub.get("clientState"), "changeType": change_type, "resource": f"Users/{user.id}",
                "tenantId": self.store.tenant_id,
                "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{user.id}",
                                 "id": user.id, "organizationId": self.store.tenant_id}}))
        self.kick()

    def kick(self) -> None:
        """Schedule a flush after the batching window (no-op when paused, idle or already scheduled)."""
        if not self.pending or self.config.notify_paused or self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.config.notify_batch_window_s, self.flush)

    def flush(self) -> None:
        """Send everything queued now, grouped by URL and chunked."""
        self._timer = None
        if self.config.notify_paused or not self.pending:
            return
        pending, self.pending = self.pending, []
        by_url: dict[str, list[dict[str, Any]]] = {}
        for url, item in pending:
            by_url.setdefault(url, []).append(item)
        size = max(1, self.config.notify_max_per_post)
        for url, items in by_url.items():
            for i in range(0, len(items), size):
                self._dispatch(url, items[i:i + size], "delivered")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _endpoint(self, url: str) -> EndpointHealth:
        health = self.health.get(url)
        if health is None:
            health = self.health[url] = EndpointHealth(self.clock.now())
        return health

    def endpoint_states(self) -> dict[str, str]:
        """Each notification URL's state now: normal, slow (held) or drop."""
        now = self.clock.now()
        return {url: health.state(now, self.config) for url, health in self.health.items()}

    def _dispatch(self, url: str, items: list[dict[str, Any]], counter: str, first: float | None = None) -> None:
        """Deliver now, hold for a slow endpoint, or drop for one past the drop threshold."""
        now = self.clock.now()
        state = self._endpoint(url).state(now, self.config)
        if state == DROP:
            self.stats.notifications["throttle_dropped"] += len(items)
            return
        if state == SLOW:
            self._hold(url, items, counter, now if first is None else first)
            return
        self._spawn(self._deliver(url, items, counter, now if first is None else first))

    def _hold(self, url: str, items: list[dict[str, Any]], counter: str, first: float) -> None:
        self.delayed.append((self.clock.now() + self.config.notify_throttle_delay_s, url, items, counter, first))
        self.stats.notifications["throttle_delayed"] += len(items)

    async def _deliver(self, url: str, items: list[dict[str, Any]], counter: str, first: float) -> None:
        payload = json.dumps({"value": items}).encode()
        attempts = 1 + max(0, self.config.notify_retry_count)
        for attempt in range(attempts):
            started, ok = time.monotonic(), False
            try:
                timeout = aiohttp.ClientTimeout(total=self.config.notify_timeout_s)
                async with self.session().post(url, data=payload, headers={"Content-Type": "application/json"},
                                               timeout=timeout) as resp:
                    await resp.read()
                    ok = 200 <= resp.status < 300
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            now = self.clock.now()
            health = self._endpoint(url)
            health.record(now, time.monotonic() - started, ok, self.config)
            if ok:
                self.stats.notifications[counter] += len(items)
                self.stats.notifications["posts"] += 1
                return
            if now - first >= self.config.notify_retry_window_s:
                self.stats.notifications["expired"] += len(items)
                break
            if health.state(now, self.config) != "normal":   # throttled: retried in 10 minutes, or dropped
                self.stats.notifications["retries"] += 1
                self._dispatch(url, items, counter, first)
                return
            if attempt + 1 < attempts:
                self.stats.notifications["retries"] += 1
                await asyncio.sleep(self.config.notify_retry_backoff_s * (2 ** attempt))
        self.stats.notifications["failed"] += len(items)
        log.info("gave up delivering %d notifications to %s", len(items), url)

    def tick(self) -> None:
        """Run what fell due on the simulator's clock: challenges before expiry, held notifications."""
        self.reauth.tick()
        now = self.clock.now()
        if not any(due <= now for due, *_ in self.delayed):
            return
        due = [d for d in self.delayed if d[0] <= now]
        self.delayed = [d for d in self.delayed if d[0] > now]
        for _, url, items, counter, first in due:
            if self._endpoint(url).state(now, self.config) == DROP:
                self.stats.notifications["throttle_dropped"] += len(items)
            else:
                self._spawn(self._deliver(url, items, counter, first))

    # ------------------------------------------------------------------ lifecycle
    def lifecycle(self, sub: dict[str, Any], event: str) -> bool:
        """Queue a lifecycle notification to the subscription's lifecycle URL; False when it has none."""
        url = sub.get("lifecycleNotificationUrl")
        if not url:
            return False
        item = {"subscriptionId": sub["id"], "subscriptionExpirationDateTime": sub["expirationDateTime"],
                "tenantId": self.store.tenant_id, "clientState": sub.get("clientState"), "lifecycleEvent": event}
        if event == "reauthorizationRequired":
            self.reauth.challenged(sub["id"])
        self._dispatch(url, [item], "lifecycle")
        return True
