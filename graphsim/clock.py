"""The simulator's one clock: every time window Graph has is measured on it.

`SimClock` is the throttle's clock (monotonic seconds that a test may freeze and move by hand, see
`graphsim.throttle.ThrottleClock`) with Graph's wall time derived from it, so the same `advance` moves
the throttle buckets, the CA window, delta visibility and token expiry, subscription expiry and
`reauthorizationRequired` challenges, notification-endpoint throttling and the registration report's
refresh. `POST /_sim/clock` (alias `POST /_sim/throttle/clock`) freezes it and moves it; a test of a
time window never waits on the machine's speed.
"""
from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

from graphsim.throttle import ThrottleClock


class SimClock(ThrottleClock):
    """Monotonic seconds (frozen or running, moved by `advance`) and the wall time that goes with them."""

    def __init__(self) -> None:
        super().__init__()
        self._epoch = datetime.now(UTC)      # wall time when the clock started ...
        self._start = float(math.floor(time.monotonic()))  # ... and the monotonic second of that moment
        # (whole, like a frozen reading: seconds since the start then come out exact)

    def utcnow(self) -> datetime:
        """Graph's current time: real UTC at start plus however far this clock has moved since."""
        return self._epoch + timedelta(seconds=self.now() - self._start)

    def since_start(self) -> float:
        """Seconds this clock has moved since the simulator started (refresh schedules count from there)."""
        return self.now() - self._start

    def timestamp(self) -> float:
        """`utcnow()` as POSIX seconds (for delta tokens and other stamps)."""
        return self.utcnow().timestamp()

    def state(self) -> dict[str, object]:
        """What `/_sim/clock` answers: frozen or not, the monotonic reading and Graph's time."""
        return {"frozen": self.frozen is not None, "now": self.now(), "sinceStart": self.since_start(),
                "utc": self.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")}


def parse_graph_time(value: str) -> datetime:
    """A Graph DateTimeOffset as an aware UTC datetime (naive values are taken as UTC)."""
    stamp = datetime.fromisoformat(value)
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
