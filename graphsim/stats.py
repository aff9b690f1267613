"""Counters for `/_sim/stats`: calls per route and status, resource units, writes, 429s, notifications."""
from __future__ import annotations

import time
from collections import Counter
from typing import Any


class Stats:
    """Plain counters, reset by `/_sim/stats/reset`."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        self.since = time.time()
        self.http_requests = 0
        self.calls = 0
        self.by_route: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.resource_units = 0
        self.writes = 0
        self.throttled: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.batch_requests = 0
        self.batch_items = 0
        self.delta_pages = 0
        self.notifications: Counter[str] = Counter()
        self.latency_delayed = 0          # answers (and $batch items) that waited a drawn latency
        self.latency_seconds = 0.0

    def latency(self, drawn: float, size: float) -> None:
        """Count one answer's added latency: its draw plus the part that grows with its size."""
        if drawn > 0 or size > 0:
            self.latency_delayed += 1
            self.latency_seconds += drawn + size

    def call(self, route: str, status: int) -> None:
        """Count one dispatched Graph operation (a `$batch` item counts as one)."""
        self.calls += 1
        self.by_route[route] += 1
        self.by_status[str(status)] += 1

    def as_dict(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """All counters as JSON."""
        out = {
            "since": self.since, "seconds": round(time.time() - self.since, 3),
            "http_requests": self.http_requests,
            "calls": {"total": self.calls, "by_route": dict(self.by_route), "by_status": dict(self.by_status)},
            "resource_units": self.resource_units, "writes": self.writes,
            "throttled": {"total": sum(self.throttled.values()), **self.throttled},
            "responses_429": self.by_status.get("429", 0),
            "faults": dict(self.faults),
            "batch": {"requests": self.batch_requests, "items": self.batch_items},
            "delta_pages": self.delta_pages,
            "latency": {"delayed": self.latency_delayed, "seconds": round(self.latency_seconds, 3)},
            "notifications": {"delivered": 0, "dropped": 0, "failed": 0, "posts": 0, "lifecycle": 0,
                              "validations": 0, **self.notifications},
        }
        if extra:
            out.update(extra)
        return out
