"""The health cache: one probe per TTL per process, shared by concurrent callers, failures cached too."""
from __future__ import annotations

import asyncio

from shared.errors import GraphUnavailable
from shared.health import HealthCache


class Counting:
    """A probe that counts its calls and, until released, keeps every caller waiting."""

    def __init__(self, *, fail: bool = False) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self) -> None:
        self.calls += 1
        await self.release.wait()
        if self.fail:
            raise GraphUnavailable("Graph did not answer")


async def test_concurrent_callers_share_one_probe():
    """Ten callers arriving while the probe runs all get its one result."""
    cache, graph, storage = HealthCache(), Counting(), Counting()
    callers = [asyncio.create_task(cache.get(graph, storage)) for _ in range(10)]
    await asyncio.sleep(0)
    graph.release.set()
    storage.release.set()
    results = await asyncio.gather(*callers)
    assert graph.calls == 1 and storage.calls == 1
    assert all(r is results[0] and r.healthy for r in results)


async def test_a_failed_probe_is_cached_with_its_code_only():
    """A failing Graph is reported by code and is not probed again within the TTL."""
    cache, graph, storage = HealthCache(), Counting(fail=True), Counting()
    graph.release.set()
    storage.release.set()
    first = await cache.get(graph, storage)
    second = await cache.get(graph, storage)
    assert first is second and graph.calls == 1
    assert first.graph == {"ok": False, "error": "graphUnavailable"} and not first.healthy


async def test_an_expired_result_is_probed_again():
    """With a TTL of zero every call probes (the TTL, not luck, is what saves Graph calls)."""
    cache, graph, storage = HealthCache(ttl=0.0), Counting(), Counting()
    graph.release.set()
    storage.release.set()
    await cache.get(graph, storage)
    await cache.get(graph, storage)
    assert graph.calls == 2
