"""A client-side resource-unit budget per tenant, so bulk reads run at Graph's pace instead of into 429s.

Graph meters identity reads in resource units (RU) per app and tenant: 8,000 RU per 10 s for a large
tenant, with the bucket starting full (platform-limits.md). Bulk paths `spend()` before each request; a
429's `Retry-After` pauses every spender of the tenant (`pause()`), because usage keeps counting while
throttled and hammering only lengthens the penalty.

Authentication-method reads (`users/{id}/authentication/*`) also meet a per-tenant limit in calls, far
below the RU budget and unpublished; `CallPace` learns it from the calls Graph accepts.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque


class RuBudget:
    """A token bucket in resource units: `capacity` RU, refilled at `capacity / window` RU per second."""

    def __init__(self, capacity: float, window_seconds: float = 10.0, *, start_full: bool = True) -> None:
        if capacity <= 0 or window_seconds <= 0:
            raise ValueError("capacity and window must be positive")
        self.capacity = float(capacity)
        self.rate = self.capacity / window_seconds
        self._level = self.capacity if start_full else 0.0
        self._stamp = time.monotonic()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.spent = 0.0
        self.waited_seconds = 0.0
        self.throttled = 0  # 429s reported through `pause`

    def _refill(self, now: float) -> None:
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def spend(self, units: float = 1.0) -> None:
        """Wait until `units` RU are available (and no pause is in force), then take them."""
        async with self._lock:  # FIFO: one waiter at a time keeps the pace smooth and fair
            while True:
                now = time.monotonic()
                self._refill(now)
                wait = max(self._paused_until - now, (units - self._level) / self.rate if self._level < units else 0.0)
                if wait <= 0:
                    self._level -= units
                    self.spent += units
                    return
                self.waited_seconds += wait
                await asyncio.sleep(wait)

    def charge(self, units: float = 1.0) -> None:
        """Take `units` now without waiting (the bucket may go into debt, which later spenders wait out).

        For calls that must not queue behind bulk spenders, such as the sweep's sequential delta pages:
        the lookups they feed wait instead, and our view of Graph's bucket stays exact.
        """
        self._refill(time.monotonic())
        self._level -= units
        self.spent += units

    def reset(self) -> None:
        """Full again, no pause in force (Graph's bucket after a quiet spell; benchmarks and tests)."""
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._paused_until = 0.0

    def pause(self, seconds: float) -> None:
        """Graph said `Retry-After: seconds`: nobody spends until then, and the bucket is taken as empty."""
        now = time.monotonic()
        self._refill(now)
        self.throttled += 1
        self._paused_until = max(self._paused_until, now + seconds)
        self._level = min(self._level, 0.0)


class CallPace:
    """A pace in calls per second for reads under a per-tenant call limit Graph does not publish (the
    authentication-method reads: a few a second in public reports), learned from what Graph accepted.

    A limit in calls refuses the part of a `$batch` beyond its burst whatever the average pace, so halving on
    each 429 would only drive the pace to nothing. Instead, the first refusal sets the pace to the rate Graph
    actually accepted over the last `WINDOW_S` seconds (at least a second of it), and each later burst of
    refusals eases it by `EASE`; the burst is a second of the pace (the batch size, at most `MAX_BURST`), and
    everyone waits out the `Retry-After`. Until the
    first refusal the pace grows by `SLOW_START_GROWTH` a second while spenders wait on it, and after it by
    `PROBE_GROWTH` every `PROBE_EVERY_S`, so a limit that rises is found again without a refusal each time.
    """

    START_PER_S = 20.0
    FLOOR_PER_S = 0.5
    CEILING_PER_S = 200.0
    MAX_BURST = 20  # Graph's $batch maximum
    WINDOW_S = 5.0
    SLOW_START_GROWTH = 1.5
    PROBE_GROWTH = 1.05
    PROBE_EVERY_S = 5.0
    EASE = 0.9

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.refused = 0   # calls Graph refused (429)
        self.accepted = 0  # calls Graph answered
        self.waited_seconds = 0.0
        self.reset()

    def reset(self) -> None:
        """Forget what was learned (a fresh process; benchmarks)."""
        now = time.monotonic()
        self.rate = self.START_PER_S
        self.slow_start = True
        self._level = float(self.burst)
        self._stamp = now
        self._paused_until = 0.0
        self._cut_at = float("-inf")  # when the pace was last cut: refusals of batches sent before are stale
        self._last_growth = now
        self._held_back = False
        self._recent: deque[tuple[float, int]] = deque()

    @property
    def burst(self) -> int:
        """How many calls may go at once: a second of the pace, between 1 and `MAX_BURST`."""
        return max(1, min(self.MAX_BURST, int(self.rate)))

    async def take(self, wanted: int) -> int:
        """Wait until the pace allows a batch (and no `Retry-After` is in force), and take it: `wanted` calls or
        the burst at that moment, whichever is fewer. The size is decided when the wait ends, not before: a
        spender that queued while the pace was faster must not send the bigger batch it asked for then."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._level = min(float(self.burst), self._level + (now - self._stamp) * self.rate)
                self._stamp = now
                need = max(1, min(wanted, self.burst))
                wait = max(self._paused_until - now, (need - self._level) / self.rate if self._level < need else 0.0)
                if wait <= 1e-9:
                    self._level -= need
                    return need
                self._held_back = True
                self.waited_seconds += wait
                await asyncio.sleep(wait)

    def answered(self, accepted: int, refused: int, retry_after: float = 1.0, *, sent_at: float | None = None) -> None:
        """A `$batch` sent at `sent_at` (monotonic; default now) came back: `accepted` calls answered, `refused`
        answered 429 with `retry_after`. Refusals of a batch sent before the last cut answer the pace already
        cut for: they are counted, and neither cut again nor lengthen the pause (with many batches in flight,
        each late refusal pushing the pause on would hold the tenant's reads nearly all the time)."""
        now = time.monotonic()
        stale = sent_at is not None and sent_at < self._cut_at
        self.accepted += accepted
        self.refused += refused
        if accepted:
            self._recent.append((now, accepted))
        while self._recent and self._recent[0][0] < now - self.WINDOW_S:
            self._recent.popleft()
        if refused and stale:
            pass
        elif refused:
            span = max(1.0, now - self._recent[0][0]) if self._recent else self.WINDOW_S
            taken = sum(n for _, n in self._recent) / span
            # The first refusal ends the slow start at what Graph took; later ones come at about the limit (the
            # pace probes up to it), so each eases the pace by EASE, never faster than what Graph took.
            learned = taken if self.slow_start else self.rate * self.EASE
            self.rate = max(self.FLOOR_PER_S, min(self.rate, learned))  # a refusal never speeds the pace up
            self.slow_start = False
            self._paused_until = max(self._paused_until, now + retry_after)
            self._cut_at = now
            self._level = min(self._level, 0.0)
            self._last_growth = now
            self._held_back = False
        elif now - self._last_growth >= (1.0 if self.slow_start else self.PROBE_EVERY_S):
            if self._held_back:  # only a pace that held somebody back is known to be too slow
                growth = self.SLOW_START_GROWTH if self.slow_start else self.PROBE_GROWTH
                self.rate = min(self.CEILING_PER_S, self.rate * growth)
            self._last_growth = now
            self._held_back = False
