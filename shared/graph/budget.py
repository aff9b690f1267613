"""A client-side resource-unit budget per tenant, so bulk reads run at Graph's pace instead of into 429s.

Graph meters identity reads in resource units (RU) per app and tenant: 8,000 RU per 10 s for a large
tenant, with the bucket starting full (platform-limits.md). Bulk paths `spend()` before each request; a
429's `Retry-After` pauses every spender of the tenant (`pause()`), because usage keeps counting while
throttled and hammering only lengthens the penalty.
"""
from __future__ import annotations

import asyncio
import time


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
