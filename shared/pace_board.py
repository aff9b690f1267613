"""One Graph budget across the app's instances: their paces exchange news through a row in Table Storage.

Graph's resource-unit bucket belongs to the app and the tenant together, so on Flex Consumption every instance
spends from the same bucket, and none is told its size. Each instance's `RuPace` learns from the answers it
gets (they all see the same `x-ms-throttle-limit-percentage`); what one instance learns alone, the others must
hear of, or a second instance doubles the 429s:

- a **429**: its `Retry-After` pause is posted (`pausedUntil`, wall clock) and every instance holds until then;
- a **cut**: the board counts the cuts 429s made (`cuts`); an instance that sees the count grow by others cuts
  its own pace once, so the app as a whole slows down as one pace would;
- a **newcomer** takes its share of the pace the active instances post (`members`: each one's pace and when
  it was last seen; silent for `MEMBER_TTL_S` and it is gone) instead of a slow start from the smallest tier,
  and the others shrink theirs to make room: the app's total stays what was learned. One that leaves frees
  its share for the others to find again by probing.

The same holds for the per-tenant limit on authentication-method reads, which every instance's `CallPace`
learns: its board is the row `pace|calls`. Each instance exchanges at most once a second while it spends
(`budget.PEER_SYNC_S`), in the background: a read and an ETag-guarded write of the checkpoint row. A lost
race is read again; a storage failure only skips that exchange (the pace goes on alone), it never holds a
Graph call up.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from shared.errors import ConcurrencyError
from shared.graph.budget import SharedPace
from shared.state import ABSENT
from shared.state.checkpoints import CheckpointTable

log = logging.getLogger(__name__)

BOARD = "pace|ru"  # the RU pace's board; the authentication-method reads' call pace has `pace|calls`
CALLS_BOARD = "pace|calls"
#: An instance that has not posted for this long is gone (its pace no longer counts).
MEMBER_TTL_S = 10.0
_ATTEMPTS = 3


class PaceBoard:
    """This instance's seat at the tenant's board: `sync(pace)` posts its news and takes the others'."""

    def __init__(self, checkpoints: CheckpointTable, *, member: str | None = None, name: str = BOARD,
                 ready: Callable[[], bool] = lambda: True) -> None:
        self.checkpoints = checkpoints
        self.name = name
        self.ready = ready  # nothing is read or written until this holds (the tenant confirmed)
        self.member = member or uuid.uuid4().hex[:12]
        self._seen_cuts: int | None = None  # the board's count after our last exchange (None: not joined)
        self._posted_cuts = 0  # our pace's cuts already on the board
        self._members = 1  # active instances (us included) at our last exchange
        self.exchanges = 0

    async def sync(self, pace: SharedPace) -> None:
        """One exchange; never raises (a failure is logged and the pace goes on alone). None before `ready()`:
        a process that has not confirmed its tenant writes nothing to storage."""
        if not self.ready():
            return
        try:
            for _ in range(_ATTEMPTS):
                value, etag = await self.checkpoints.get(self.name)
                if await self._exchange(pace, value or {}, etag or ABSENT):
                    self.exchanges += 1
                    return
        except Exception as exc:  # the board is advice: Graph's answers still pace us
            log.warning("the shared Graph pace could not be exchanged (%s); this instance paces alone",
                        type(exc).__name__)

    async def _exchange(self, pace: SharedPace, board: dict[str, Any], etag: str) -> bool:
        wall, mono = time.time(), pace.clock()
        others = {k: m for k, m in (board.get("members") or {}).items()
                  if k != self.member and isinstance(m, dict) and wall - float(m.get("seen", 0)) <= MEMBER_TTL_S}
        cuts, members = int(board.get("cuts", 0)), len(others) + 1
        if self._seen_cuts is None:
            if others:  # a newcomer takes its share of what the others learned
                pace.join(sum(float(m.get("rate", 0)) for m in others.values()) / members)
        else:
            if cuts > self._seen_cuts:
                pace.follow_cut()
            if members > self._members:  # newcomers take their share: ours shrinks to keep the total
                pace.join(pace.rate * self._members / members)
        self._seen_cuts, self._members = cuts, members  # heard, whether or not our post below wins the race
        paused = float(board.get("pausedUntil", 0))
        if paused > wall:
            pace.hold(mono + paused - wall)
        mine = pace.cuts - self._posted_cuts
        ours = wall + max(0.0, pace.paused_until - mono)
        news = {"cuts": cuts + mine, "pausedUntil": max(paused, ours),
                "members": {**others, self.member: {"seen": wall, "rate": round(pace.rate, 3)}}}
        try:
            await self.checkpoints.put(self.name, news, etag)
        except ConcurrencyError:
            return False
        self._seen_cuts, self._posted_cuts = cuts + mine, pace.cuts
        return True
