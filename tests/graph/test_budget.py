"""The resource-unit budget: a token bucket that paces bulk reads, takes charges into debt, and holds every
spender during a 429's Retry-After; and the call pace that learns an unpublished call limit from what Graph
accepts. Timed on a clock the test moves, so no assertion depends on the machine."""
from __future__ import annotations

import asyncio
import types

import pytest

from graphsim.config import SimConfig
from graphsim.throttle import Throttle
from shared.graph import budget as budget_module
from shared.graph.budget import CallPace, RuBudget


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
    monkeypatch.setattr(budget_module, "time", types.SimpleNamespace(monotonic=moving.monotonic))
    monkeypatch.setattr(budget_module, "asyncio", types.SimpleNamespace(Lock=asyncio.Lock, sleep=moving.sleep))
    return moving


async def test_the_budget_paces_spending_to_its_refill_rate(clock: MovingClock) -> None:
    """A full bucket pays at once; beyond it a spender waits for the refill; a pause holds everybody."""
    budget = RuBudget(10, window_seconds=1.0)  # 10 RU, refilled at 10 RU/s
    await budget.spend(10)
    assert budget.waited_seconds == 0 and budget.spent == 10
    await budget.spend(5)  # the bucket is empty: 5 RU take half a second to refill
    assert budget.waited_seconds == pytest.approx(0.5) and budget.spent == 15
    budget.pause(0.3)
    await asyncio.gather(budget.spend(1), budget.spend(1))  # the first waits out the pause, which refills 3 RU
    assert budget.waited_seconds == pytest.approx(0.8) and budget.spent == 17


async def test_a_pause_holds_a_full_bucket_and_a_shorter_pause_does_not_cut_it(clock: MovingClock) -> None:
    """Retry-After stops spending even with RU in the bucket; a later, shorter Retry-After leaves the longer one."""
    budget = RuBudget(100, window_seconds=10.0)
    budget.pause(5)
    budget.pause(1)
    await budget.spend(1)
    assert budget.waited_seconds == pytest.approx(5.0) and clock.now == pytest.approx(5.0)


async def test_a_pause_empties_the_bucket(clock: MovingClock) -> None:
    """Usage counts while throttled: after the pause the bucket holds only what it refilled since."""
    budget = RuBudget(10, window_seconds=1.0)
    budget.pause(0.2)  # 2 RU refilled by the time it ends
    await budget.spend(4)
    assert budget.waited_seconds == pytest.approx(0.4)  # the pause, then 0.2 s for the 2 RU still missing
    assert budget.throttled == 1  # each reported 429 is counted, for the benchmarks' figures


async def test_a_charge_never_waits_and_later_spenders_pay_its_debt(clock: MovingClock) -> None:
    """`charge` takes RU at once, past empty; the next `spend` waits until the debt and its own RU are refilled."""
    budget = RuBudget(10, window_seconds=1.0)
    budget.charge(15)
    assert budget.spent == 15 and budget.waited_seconds == 0 and clock.now == 0.0
    await budget.spend(5)  # -5 RU in the bucket: 10 RU to refill at 10 RU/s
    assert budget.waited_seconds == pytest.approx(1.0) and budget.spent == 20


async def test_an_empty_start_waits_for_the_first_refill(clock: MovingClock) -> None:
    """`start_full=False` starts with nothing: the first spender waits for its RU."""
    budget = RuBudget(10, window_seconds=1.0, start_full=False)
    await budget.spend(5)
    assert budget.waited_seconds == pytest.approx(0.5)


async def test_the_bucket_holds_no_more_than_its_capacity(clock: MovingClock) -> None:
    """A quiet spell refills the bucket to its capacity and no further."""
    budget = RuBudget(10, window_seconds=1.0)
    await budget.spend(10)
    clock.now += 3600
    await budget.spend(10)
    assert budget.waited_seconds == 0
    await budget.spend(1)
    assert budget.waited_seconds == pytest.approx(0.1)


async def test_reset_fills_the_bucket_and_lifts_a_pause(clock: MovingClock) -> None:
    """After `reset` the full capacity can be spent at once, whatever was spent or paused before."""
    budget = RuBudget(10, window_seconds=1.0)
    budget.charge(30)
    budget.pause(60)
    budget.reset()
    await budget.spend(10)
    assert budget.waited_seconds == 0


async def test_spenders_are_served_in_turn(clock: MovingClock) -> None:
    """Concurrent spenders queue: each is served when the bucket has its RU, in the order they came."""
    budget = RuBudget(10, window_seconds=1.0, start_full=False)
    served: list[tuple[str, float]] = []

    async def spender(name: str, units: float) -> None:
        await budget.spend(units)
        served.append((name, clock.now))

    await asyncio.gather(spender("a", 5), spender("b", 10), spender("c", 1))
    assert [name for name, _ in served] == ["a", "b", "c"]
    assert [at for _, at in served] == pytest.approx([0.5, 1.5, 1.6])


@pytest.mark.parametrize(("capacity", "window"), [(0, 10.0), (-1, 10.0), (10, 0.0), (10, -1.0)])
def test_capacity_and_window_must_be_positive(capacity: float, window: float) -> None:
    """A bucket that could never refill (or never hold anything) is refused when it is made."""
    with pytest.raises(ValueError, match="positive"):
        RuBudget(capacity, window_seconds=window)


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
