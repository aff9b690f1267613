"""Injected faults: latency, random 429/503/504 answers and dropped connections.

Rates come from the knobs (0..1). `fault_seed` makes the sequence repeatable. Control endpoints
(`/_sim/*`) are never faulted; the `$batch` envelope gets transport faults (latency, drops) while each
item inside it can get its own status fault, as Graph's items fail one by one.
"""
from __future__ import annotations

import random

from graphsim.config import SimConfig


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

    def _check_seed(self) -> None:
        if self.config.fault_seed != self._seed:
            self.reseed()

    def latency_s(self) -> float:
        """Seconds to wait before answering (fixed plus uniform jitter)."""
        c = self.config
        if c.latency_ms <= 0 and c.latency_jitter_ms <= 0:
            return 0.0
        self._check_seed()
        return (c.latency_ms + self.rng.uniform(0, c.latency_jitter_ms)) / 1000.0

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
