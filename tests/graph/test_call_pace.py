"""The call pace: learns an unpublished per-tenant call limit (the authentication-method reads) from what Graph
accepts, keeps each `$batch` to a second of pace and waits out Retry-After. Timed on a clock the test moves, so
no assertion depends on the machine; Graph's limit is the simulator's own bucket on that clock."""
from __future__ import annotations

import asyncio
import types

import pytest

from graphsim.config import SimConfig
from graphsim.throttle import Throttle
from shared.graph import budget as budget_module
from shared.graph.budget import CallPace
from tests.conftest import paces_use_clock


class MovingClock:
    """`time.monotonic` for the budget, moved only by the budget's own `asyncio.sleep`."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1e-9)  # a real sleep always lets some time pass
        await asyncio.sleep(0)  # still a suspension point, as the real sleep is


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> MovingClock:
    moving = MovingClock()
    paces_use_clock(monkeypatch, moving.monotonic, moving.sleep)
    return moving


async def _read_under_a_call_limit(clock: MovingClock, pace: CallPace, *, limit: float, burst: float,
                                   calls: int, latency: float = 0.15) -> tuple[float, int]:
    """`calls` reads through `pace`, each `$batch` answered by the simulator's own authentication-method
    bucket (`limit` calls a second, `burst` at once, starting full) on the test's clock. Returns the seconds
    it took and the calls Graph refused."""
    throttle = Throttle(SimConfig(auth_methods_rps=limit, auth_methods_window_s=burst / limit))
    throttle.clock = types.SimpleNamespace(now=lambda: clock.now)
    pending, refused = calls, 0
    while pending:
        size = await pace.take(pending)
        clock.now += latency
        verdicts = [throttle.auth_methods_charge() for _ in range(size)]
        accepted = sum(v.allowed for v in verdicts)
        pending -= accepted
        refused += size - accepted
        pace.answered(accepted, size - accepted, max((v.retry_after for v in verdicts if not v.allowed), default=1))
    return clock.now, refused


@pytest.mark.parametrize(("limit", "burst"), [(6.0, 6.0), (6.0, 60.0), (2.0, 2.0), (1.0, 1.0), (20.0, 20.0)])
async def test_a_call_pace_learns_an_unpublished_call_limit_without_hammering_it(
        clock: MovingClock, limit: float, burst: float) -> None:
    """600 reads under a call limit the pace is never told: within 1.25 times the time the limit allows, with
    at most a third as many refusals as reads (a fixed pace sends each refused `$batch` item again and again:
    12 refusals per read at 6 a second, measured by the mass-rename benchmark)."""
    took, refused = await _read_under_a_call_limit(clock, CallPace(), limit=limit, burst=burst, calls=600)
    optimum = (600 - burst) / limit
    assert took <= 1.25 * optimum + 2, (took, optimum)
    assert refused <= 600 / 3, refused


async def test_a_call_pace_waits_out_retry_after_and_keeps_batches_to_its_burst(clock: MovingClock) -> None:
    """After a refusal nobody sends until its Retry-After, and a batch is never bigger than a second of pace."""
    pace = CallPace()
    assert await pace.take(50) == 20  # never more than a $batch
    clock.now += 0.2
    pace.answered(6, 14, retry_after=2)
    assert pace.burst == 6 and not pace.slow_start
    started = clock.now
    assert await pace.take(20) == 6
    assert clock.now >= started + 2


async def test_refusals_of_batches_sent_before_the_cut_neither_cut_again_nor_extend_the_pause(
        clock: MovingClock) -> None:
    """Several `$batch`es in flight meet the limit together: the first refusal cuts and pauses; the others,
    sent before that cut, are only counted."""
    pace = CallPace()
    pace.answered(6, 14, retry_after=1)  # ends the slow start
    clock.now += 10.0
    sent = clock.now
    await pace.take(6)
    clock.now += 0.2  # the answers come back
    pace.answered(3, 3, retry_after=1, sent_at=sent)
    cut, paused = pace.rate, clock.now + 1
    pace.answered(0, 6, retry_after=5, sent_at=sent)  # in flight when the pace was cut
    assert pace.rate == cut and pace.refused == 14 + 3 + 6
    await pace.take(1)
    assert paused <= clock.now < paused + 1  # the stale refusal's Retry-After of 5 s did not hold it


async def test_sixteen_concurrent_readers_share_the_call_pace_near_the_limit() -> None:
    """16 processors, each reading 20 users' passkeys in batches, through one pace under a limit of 6 calls a
    second, on a virtual clock with Graph's log-normal latency: near the limit, with few refusals (a batch
    sized before a long wait was once sent at a stale, bigger size: 0.33 of the limit, 224 refusals)."""
    took, refused = await _concurrent_readers(workers=16, messages=30, per_message=20, limit=6.0)
    optimum = (600 - 6) / 6.0
    assert took <= 1.25 * optimum, (took, optimum)
    assert refused <= 600 / 10, refused


async def _concurrent_readers(*, workers: int, messages: int, per_message: int, limit: float) -> tuple[float, int]:
    """`workers` tasks reading `messages` x `per_message` passkeys through one CallPace against the simulator's
    authentication-method bucket, on a virtual clock that jumps to the next sleeper; (seconds, refused)."""
    import heapq
    import math
    import random

    class VirtualClock:
        def __init__(self) -> None:
            self.now, self.sleepers, self.count = 0.0, [], 0

        async def sleep(self, seconds: float) -> None:
            future = asyncio.get_running_loop().create_future()
            heapq.heappush(self.sleepers, (self.now + max(seconds, 0.0), self.count, future))
            self.count += 1
            await future

    clock = VirtualClock()
    saved = budget_module.time, budget_module.asyncio
    budget_module.time = types.SimpleNamespace(monotonic=lambda: clock.now)  # type: ignore[assignment]
    budget_module.asyncio = types.SimpleNamespace(Lock=asyncio.Lock, sleep=clock.sleep)  # type: ignore[assignment]
    try:
        pace = CallPace()
        throttle = Throttle(SimConfig(auth_methods_rps=limit, auth_methods_window_s=1.0))
        throttle.clock = types.SimpleNamespace(now=lambda: clock.now)
        draw, sigma = random.Random(1), math.log(800 / 150) / 2.326  # Graph's 150 ms median, 800 ms p99
        queue, refused = list(range(messages)), [0]

        async def worker() -> None:
            while queue:
                queue.pop()
                pending = per_message
                while pending:
                    size = await pace.take(pending)
                    sent = clock.now
                    await clock.sleep(0.075 * math.exp(draw.gauss(0, sigma)))
                    verdicts = [throttle.auth_methods_charge() for _ in range(size)]
                    await clock.sleep(0.075 * math.exp(draw.gauss(0, sigma)))
                    accepted = sum(v.allowed for v in verdicts)
                    pending -= accepted
                    refused[0] += size - accepted
                    pace.answered(accepted, size - accepted,
                                  max((v.retry_after for v in verdicts if not v.allowed), default=1), sent_at=sent)

        work = asyncio.gather(*[worker() for _ in range(workers)])
        while not work.done():
            for _ in range(50):
                await asyncio.sleep(0)
            if not work.done():
                wake, _, future = heapq.heappop(clock.sleepers)
                clock.now = max(clock.now, wake)
                future.set_result(None)
        work.result()
        return clock.now, refused[0]
    finally:
        budget_module.time, budget_module.asyncio = saved
