"""Graph's identity throttling: resource-unit and write buckets per app and tenant, the
Conditional Access limit of one request per second per tenant, and the authentication-method limit
(`users/{id}/authentication/*`, `auth_methods_rps` per tenant across apps; unpublished, see config.py).

Buckets refill continuously from a monotonic clock and start full, so the numbers are exact enough
for benchmarks: a client that spends faster than the refill rate gets a 429 whose `Retry-After` is the
time until the bucket again holds the request's cost. Throttled requests are still charged when
`throttle_charge_rejected` is on (Graph: "usage still counts while throttled"), with the debt capped at
one bucket so a hammering client can always recover.

The clock is a `ThrottleClock`: the monotonic clock unless a test freezes it and moves it by hand
(`POST /_sim/throttle/clock`), so a test of a time window never depends on how fast the machine is.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from graphsim.config import SimConfig


class ThrottleClock:
    """Monotonic seconds, or a frozen reading that only `advance` moves (for tests of time windows)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.frozen: float | None = None

    def now(self) -> float:
        """The throttle's current time in seconds."""
        return self.frozen if self.frozen is not None else time.monotonic() + self.offset

    def freeze(self, frozen: bool) -> None:
        """Stop the clock at its next whole second, or let it run on from where it stands.

        A whole second, so a test's whole-second moves land exactly on a window's edge: frozen at 0.7, then
        `29 + 1` would come out one ulp away from `30` now and then, and a test of "shown at 30 s" would flake.
        """
        if frozen and self.frozen is None:
            self.frozen = float(math.ceil(self.now()))
        elif not frozen and self.frozen is not None:
            self.offset = self.frozen - time.monotonic()
            self.frozen = None

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds` (frozen or running)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        if self.frozen is not None:
            self.frozen += seconds
        else:
            self.offset += seconds


class TokenBucket:
    """A continuously refilling bucket; capacity and rate are passed on each refill so knob changes apply."""

    __slots__ = ("level", "stamp")

    def __init__(self, capacity: float, now: float) -> None:
        self.level = capacity
        self.stamp = now

    def refill(self, capacity: float, rate: float, now: float) -> None:
        """Add what accrued since the last look, up to `capacity`."""
        if now > self.stamp:
            self.level = min(capacity, self.level + (now - self.stamp) * rate)
            self.stamp = now


@dataclass
class Verdict:
    """The throttle's answer for one request."""

    allowed: bool
    ru: int = 0
    retry_after: int | None = None
    information: str = ""
    limit_percentage: float | None = None


class Throttle:
    """Resource-unit and write buckets per app id (one tenant per simulator) plus the CA limiter."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.ru: dict[str, TokenBucket] = {}
        self.writes: dict[str, TokenBucket] = {}
        self.ca_last: float | None = None
        self.auth_methods: TokenBucket | None = None  # one per tenant, shared by every app
        self.clock = ThrottleClock()

    def reset(self) -> None:
        """Refill every bucket (used by `/_sim/throttle/reset` and when limits change)."""
        self.ru.clear()
        self.writes.clear()
        self.ca_last = None
        self.auth_methods = None

    def _limits(self) -> tuple[float, float, float, float]:
        c = self.config
        s = c.throttle_scale
        return (c.throttle_capacity_ru * s, c.throttle_refill_ru_per_s * s,
                c.write_capacity * s, c.write_refill_per_s * s)

    def charge(self, app: str, ru: int, write: bool) -> Verdict:
        """Charge `ru` resource units (and one write when `write`) to `app`; say whether it may run."""
        if not self.config.throttle_enabled:
            return Verdict(True, ru)
        cap, rate, wcap, wrate = self._limits()
        now = self.clock.now()
        bucket = self.ru.get(app)
        if bucket is None:
            bucket = self.ru[app] = TokenBucket(cap, now)
        bucket.refill(cap, rate, now)
        wbucket = None
        if write:
            wbucket = self.writes.get(app)
            if wbucket is None:
                wbucket = self.writes[app] = TokenBucket(wcap, now)
            wbucket.refill(wcap, wrate, now)
        if bucket.level >= ru and (wbucket is None or wbucket.level >= 1):
            bucket.level -= ru
            if wbucket is not None:
                wbucket.level -= 1
            return Verdict(True, ru, limit_percentage=_percentage(bucket.level, cap))
        if bucket.level < ru:
            info, level, cost, fill = "ResourceUnitLimitExceeded", bucket, ru, rate
        else:
            info, level, cost, fill = "WriteLimitExceeded", wbucket, 1, wrate  # type: ignore[assignment]
        if self.config.throttle_charge_rejected:
            bucket.level = max(-cap, bucket.level - ru)
            if wbucket is not None:
                wbucket.level = max(-wcap, wbucket.level - 1)
        deficit = cost - level.level
        retry = max(1, math.ceil(deficit / fill)) if fill > 0 else 3600
        return Verdict(False, ru, retry_after=retry, information=info,
                       limit_percentage=_percentage(bucket.level, cap) or 1.0)

    def ca_allowed(self) -> bool:
        """Conditional Access: at most `ca_requests_per_second` per tenant; a refused call does not count."""
        rate = self.config.ca_requests_per_second
        if rate <= 0 or not self.config.throttle_enabled:
            return True
        now = self.clock.now()
        if self.ca_last is not None and now - self.ca_last < 1.0 / rate:
            return False
        self.ca_last = now
        return True

    def refund(self, app: str, ru: int) -> None:
        """Give back `ru` charged to `app` for a call another limit then refused (when refused calls are free)."""
        bucket = self.ru.get(app)
        if bucket is not None:
            bucket.level += ru

    def auth_methods_charge(self) -> Verdict:
        """One `users/{id}/authentication/*` call against the tenant's bucket; a refused call takes nothing
        from it (only a granted call is known to count) and waits until one call's worth has refilled."""
        rate = self.config.auth_methods_rps
        if rate <= 0 or not self.config.throttle_enabled:
            return Verdict(True)
        cap = max(1.0, rate * self.config.auth_methods_window_s)
        now = self.clock.now()
        if self.auth_methods is None:
            self.auth_methods = TokenBucket(cap, now)
        bucket = self.auth_methods
        bucket.refill(cap, rate, now)
        if bucket.level >= 1:
            bucket.level -= 1
            return Verdict(True, limit_percentage=_percentage(bucket.level, cap))
        retry = max(1, math.ceil((1 - bucket.level) / rate))
        return Verdict(False, retry_after=retry, information="ResourceUnitLimitExceeded",
                       limit_percentage=_percentage(bucket.level, cap) or 1.0)

    def levels(self) -> dict[str, float]:
        """Current RU level per app (after refill), for `/_sim/stats`."""
        cap, rate, _, _ = self._limits()
        now = self.clock.now()
        out = {}
        for app, bucket in self.ru.items():
            bucket.refill(cap, rate, now)
            out[app] = round(bucket.level, 3)
        return out


def _percentage(level: float, capacity: float) -> float | None:
    """Graph's `x-ms-throttle-limit-percentage` (0.8..1.8) once usage passes 80 %, else None."""
    if capacity <= 0:
        return None
    used = (capacity - level) / capacity
    if used < 0.8:
        return None
    return round(min(1.8, used), 2)
