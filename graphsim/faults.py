"""Injected faults: latency, random 429/503/504 answers and dropped connections.

Rates come from the knobs (0..1). `fault_seed` makes the sequence repeatable. Control endpoints
(`/_sim/*`) are never faulted; the `$batch` envelope gets transport faults (latency, drops) and its own
429/503 (`fault_batch_*_rate`, before any item runs) while each item inside it can get its own status
fault, as Graph's items fail one by one.

Latency is log-normal: `ln(delay)` is normal with mean `ln(latency_ms)` and the standard deviation that
puts the 99th percentile at `latency_p99_ms`, i.e. `sigma = ln(p99 / median) / z99`. Response times of
network services are right-skewed with a long tail, which a log-normal shows with two numbers people
actually quote (a median and a p99). The draw (`draw_latency_ms`, `Faults.latency_s`) is separate from the
wait, so the distribution is tested without sleeping; latency draws have their own random sequence
(seeded from `fault_seed`) so turning latency on does not change which requests get faults.
"""
from __future__ import annotations

import math
import random

from graphsim.config import SimConfig

#: The standard normal distribution's 99th percentile.
Z_99 = 2.3263478740408408


def draw_latency_ms(rng: random.Random, median_ms: float, p99_ms: float) -> float:
    """One log-normal draw with the given median and 99th percentile (ms); a p99 at or below the median
    gives the median itself, and a median of 0 gives 0."""
    if median_ms <= 0:
        return 0.0
    if p99_ms <= median_ms:
        return median_ms
    sigma = math.log(p99_ms / median_ms) / Z_99
    return rng.lognormvariate(math.log(median_ms), sigma)


class Faults:
    """Draws fault decisions from the current knobs."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._seed: int | None = None
        self.rng = random.Random()
        self.reseed()

    def reseed(self) -> None:
        """Restart the random sequence from `fault_seed` (random when unset)."""
        self._seed = self.config.fault_seed
        self.rng = random.Random(self._seed)
        self.latency_rng = random.Random(None if self._seed is None else f"latency:{self._seed}")

    def _check_seed(self) -> None:
        if self.config.fault_seed != self._seed:
            self.reseed()

    def latency_s(self) -> float:
        """Seconds to wait before answering one request: a log-normal draw (see the module docstring)."""
        c = self.config
        if c.latency_ms <= 0:
            return 0.0
        self._check_seed()
        return draw_latency_ms(self.latency_rng, c.latency_ms, c.latency_p99_ms) / 1000.0

    def size_latency_s(self, items: int) -> float:
        """Seconds an answer of `items` objects (a page, or the requests of a `$batch`) takes on top."""
        return max(0, items) * self.config.latency_per_item_ms / 1000.0

    def drop(self) -> bool:
        """True when this connection should be closed without an answer."""
        if self.config.fault_drop_rate <= 0:
            return False
        self._check_seed()
        return self.rng.random() < self.config.fault_drop_rate

    def status(self) -> int | None:
        """An injected status (429, 503 or 504) for this request, or None."""
        c = self.config
        total = c.fault_429_rate + c.fault_503_rate + c.fault_504_rate
        if total <= 0:
            return None
        self._check_seed()
        draw = self.rng.random()
        if draw < c.fault_429_rate:
            return 429
        if draw < c.fault_429_rate + c.fault_503_rate:
            return 503
        if draw < total:
            return 504
        return None

    def batch_status(self) -> int | None:
        """An injected status (429 or 503) for a whole `$batch` envelope, or None."""
        c = self.config
        total = c.fault_batch_429_rate + c.fault_batch_503_rate
        if total <= 0:
            return None
        self._check_seed()
        draw = self.rng.random()
        if draw < c.fault_batch_429_rate:
            return 429
        if draw < total:
            return 503
        return None
