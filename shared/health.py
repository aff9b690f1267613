"""The health probe, cached per process so an anonymous caller cannot spend the tenant's Graph budget.

`GET /api/health` is anonymous; each answer used to read the FIDO2 policy from Graph. Now one probe
(Graph and storage, each bounded to a few seconds) runs at most once per `HEALTH_TTL_SECONDS` per
process, and requests that arrive while it runs wait for that same probe instead of starting another.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

HEALTH_TTL_SECONDS = 30.0
PROBE_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class HealthResult:
    """One probe: whether Graph and storage answered (error codes only, never messages)."""

    graph: dict[str, Any]
    storage: dict[str, Any]
    at: float  # time.monotonic() when the probe finished

    @property
    def healthy(self) -> bool:
        return bool(self.graph["ok"] and self.storage["ok"])

    def age_seconds(self, now: float | None = None) -> int:
        return max(0, int((time.monotonic() if now is None else now) - self.at))


class HealthCache:
    """The last probe result, refreshed at most once per `ttl` seconds; one probe at a time."""

    def __init__(self, ttl: float = HEALTH_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._result: HealthResult | None = None
        self._lock = asyncio.Lock()

    def _fresh(self) -> HealthResult | None:
        if self._result is not None and time.monotonic() - self._result.at < self.ttl:
            return self._result
        return None

    async def get(self, graph: Callable[[], Awaitable[Any]], storage: Callable[[], Awaitable[Any]]) -> HealthResult:
        """The cached result, or a new probe of `graph` and `storage` when it is older than the TTL."""
        cached = self._fresh()
        if cached is not None:
            return cached
        async with self._lock:  # concurrent callers queue here and find the probe the first one ran
            cached = self._fresh()
            if cached is not None:
                return cached
            graph_result, storage_result = await asyncio.gather(_probe(graph), _probe(storage))
            self._result = HealthResult(graph=graph_result, storage=storage_result, at=time.monotonic())
            return self._result


async def _probe(call: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    try:
        await asyncio.wait_for(call(), timeout=PROBE_TIMEOUT_SECONDS)
        return {"ok": True}
    except Exception as exc:  # health reports, it never fails
        return {"ok": False, "error": getattr(exc, "code", type(exc).__name__)}
