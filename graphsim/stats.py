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
        # Requests answered after a drawn latency above zero, and the total of those delays: what a figure of
        # "requests delayed" counts (a knob being on says nothing about whether a request waited).
        self.delayed_requests = 0
        self.delayed_seconds = 0.0

    def call(self, route: str, status: int) -> None:
        """Count one dispatched Graph operation (a `$batch` item counts as one)."""
        self.calls += 1
        self.by_route[route] += 1
        self.by_status[str(status)] += 1

    def delayed(self, seconds: float) -> None:
        """Count one Graph request held `seconds` (> 0) by the drawn latency before it was answered."""
        if seconds > 0:
            self.delayed_requests += 1
            self.delayed_seconds += seconds

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
            "delayed": {"requests": self.delayed_requests, "seconds": round(self.delayed_seconds, 3)},
            "notifications": {"delivered": 0, "dropped": 0, "failed": 0, "posts": 0, "lifecycle": 0,
                              "validations": 0, **self.notifications},
        }
        if extra:
            out.update(extra)
        return out
