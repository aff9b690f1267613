"""The resource-unit pace: learns an unknown bucket's refill rate from Graph's answers, takes charges into debt,
and holds every spender during a 429's Retry-After. Timed on a clock the test moves, so no assertion depends on
the machine; Graph's bucket is the simulator's own throttle on that clock, sized by a seeded draw the pace is
never told."""
from __future__ import annotations

import asyncio
import heapq
import random
from dataclasses import dataclass, field

import pytest

from graphsim.config import SimConfig
from graphsim.throttle import Throttle
from shared.graph.budget import CUT, START_RU_PER_S, RuPace
from tests.conftest import paces_use_clock

LATENCY_S = 0.15  # one $batch round trip
BATCH = 20


class VirtualClock:
    """`time.monotonic` and `asyncio.sleep` for the pace and the test's spenders: time jumps to the next sleeper
    once every task is waiting, so a minute of traffic takes a moment and always comes out the same."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), self._count, future))
        self._count += 1
        await future

    async def run(self, work: asyncio.Future[None] | asyncio.Task[None]) -> None:
        """Drive `work` to its end, moving the clock whenever nothing else can run."""
        while True:
            for _ in range(50):  # let every runnable task reach its next wait
                await asyncio.sleep(0)
            if work.done():
                work.result()
                return
            wake, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            future.set_result(None)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    virtual = VirtualClock()
    paces_use_clock(monkeypatch, virtual.monotonic, virtual.sleep)
    return virtual


def drawn_bucket(seed: int) -> tuple[float, float]:
    """(capacity RU, refill RU/s) drawn around Graph's published tiers (half the smallest to twice the largest
    bucket, refilled over 5 to 20 s), at most 1,000 RU/s so the test's 16 spenders are never the limit."""
    rng = random.Random(seed)
    capacity = rng.uniform(1750, 16000)
    refill = min(1000.0, capacity / rng.uniform(5, 20))
    return capacity, refill


@dataclass
class Tally:
    """What Graph answered: successful items with their time, and 429s."""

    ok_at: list[float] = field(default_factory=list)
    throttled: int = 0

    def ok_between(self, start: float, end: float) -> int:
        return sum(1 for at in self.ok_at if start <= at < end)


async def bulk_reader(clock: VirtualClock, graph: Throttle, pace: RuPace, tally: Tally, *, workers: int,
                      until: float, app: str = "app") -> None:
    """One process of the product: `workers` concurrent `$batch`es of 1-RU reads, paced by `pace`, telling it
    what came back as the gateway does (the items' header; a 429's Retry-After)."""

    async def worker() -> None:
        while clock.now < until:
            await pace.spend(BATCH)
            await clock.sleep(LATENCY_S / 2)
            graph.clock.frozen = clock.now
            verdicts = [graph.charge(app, 1, False) for _ in range(BATCH)]
            await clock.sleep(LATENCY_S / 2)
            answered = [v for v in verdicts if v.allowed]
            refused = [v for v in verdicts if not v.allowed]
            tally.ok_at.extend([clock.now] * len(answered))
            tally.throttled += len(refused)
            if answered:
                seen = [v.limit_percentage for v in answered if v.limit_percentage is not None]
                pace.observe(max(seen) if seen else None)
            if refused:
                pace.pause(max(float(v.retry_after or 1) for v in refused))

    await asyncio.gather(*(worker() for _ in range(workers)))


def graph_bucket(capacity: float, refill: float) -> Throttle:
    """Graph's RU bucket for the tenant (starting full, usage counted while throttled), on a frozen clock."""
    graph = Throttle(SimConfig(throttle_capacity_ru=capacity, throttle_refill_ru_per_s=refill))
    graph.clock.freeze(True)
    graph.clock.frozen = 0.0
    return graph


async def traffic(clock: VirtualClock, capacity: float, refill: float, *, spenders: int, workers: int,
                  seconds: float) -> tuple[Tally, list[RuPace]]:
    """`spenders` processes, each with its own pace, reading as fast as they are let for `seconds`."""
    graph = graph_bucket(capacity, refill)
    tally = Tally()
    paces = [RuPace() for _ in range(spenders)]
    work = asyncio.ensure_future(asyncio.gather(
        *(bulk_reader(clock, graph, pace, tally, workers=workers, until=seconds) for pace in paces)))
    await clock.run(work)
    return tally, paces


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_pace_converges_near_an_unknown_buckets_refill_rate(clock: VirtualClock, seed: int) -> None:
    """Told nothing of the bucket, a bulk run soon reads at about its refill rate, with 429s under 1 % of answers."""
    capacity, refill = drawn_bucket(seed)
    tally, (pace,) = await traffic(clock, capacity, refill, spenders=1, workers=16, seconds=90)
    late = tally.ok_between(45, 90) / 45  # long after the bucket's first content is spent
    assert 0.85 * refill <= late <= 1.02 * refill, (capacity, refill, late)
    assert 0.6 * refill <= pace.rate <= 1.5 * refill, (capacity, refill, pace.rate)
    assert tally.throttled <= 0.01 * len(tally.ok_at), (capacity, refill, tally.throttled)


@pytest.mark.parametrize("seed", [4, 5, 6])
async def test_a_second_spender_does_not_double_the_429s(clock: VirtualClock, seed: int) -> None:
    """Two processes of the same tenant, each learning alone, share the bucket without twice one's 429s."""
    capacity, refill = drawn_bucket(seed)
    alone, _ = await traffic(clock, capacity, refill, spenders=1, workers=8, seconds=90)
    clock.now = 0.0
    pair, _ = await traffic(clock, capacity, refill, spenders=2, workers=8, seconds=90)
    assert pair.throttled < 2 * max(alone.throttled, 1), (capacity, refill, alone.throttled, pair.throttled)
    assert pair.throttled <= 0.01 * len(pair.ok_at)
    assert pair.ok_between(45, 90) / 45 <= 1.02 * refill  # together they still read no faster than the bucket


async def test_a_429_pauses_every_spender_for_retry_after_and_cuts_the_pace_once(clock: VirtualClock) -> None:
    """Several 429s of one burst at the limit: nobody spends until the longest Retry-After, and the pace is
    halved once."""
    pace = RuPace(100)
    await pace.spend(100)  # the pace's one-second burst
    rate = pace.rate
    pace.pause(5, 1.0)
    pace.pause(2, 1.0)  # a shorter Retry-After of the same burst neither shortens the pause nor cuts again
    pace.pause(5, 1.0)
    assert pace.rate == pytest.approx(rate * CUT) and pace.throttled == 3
    started: list[float] = []

    async def spender() -> None:
        await pace.spend(1)
        started.append(clock.now)

    await clock.run(asyncio.ensure_future(asyncio.gather(spender(), spender())))
    assert min(started) >= 5.0 and max(started) < 5.1
    pace.pause(1, 1.0)  # a 429 after the pause answers a request sent at the new pace: cut again
    assert pace.rate == pytest.approx(rate * CUT * CUT)


async def test_a_storm_of_429s_below_the_limit_keeps_every_pause_but_never_stalls_the_pace(clock: VirtualClock) -> None:
    """30 % of $batch rounds refused with Retry-After 1 s while Graph never said the limit was near (a storm,
    not our pace): each refusal still holds every spender for its Retry-After, and the pace stays at the
    smallest published tier, so 2,000 rounds take about as long as their pauses, not hours at the floor."""
    pace = RuPace()
    draw = random.Random(7)
    refusals = 0
    for _ in range(2000):
        await clock.run(asyncio.ensure_future(pace.spend(BATCH)))
        clock.now += LATENCY_S
        if draw.random() < 0.30:
            refusals += 1
            paused_at = clock.now
            pace.pause(1.0)
            waiter = asyncio.ensure_future(pace.spend(0.001))
            await clock.run(waiter)
            assert clock.now >= paused_at + 1.0  # the Retry-After held
        else:
            pace.observe(None)
    assert pace.rate >= START_RU_PER_S and pace.throttled == refusals
    assert clock.now < 2000 * LATENCY_S + refusals * 1.0 + 2000 * BATCH / START_RU_PER_S


async def test_a_429_after_the_header_said_the_limit_was_near_cuts_below_the_starting_pace(
        clock: VirtualClock) -> None:
    """The same refusal after answers at 90 % of the limit is the tenant's limit: the pace halves past its start."""
    pace = RuPace(100)
    await pace.spend(100)
    pace.observe(0.9)
    rate = pace.rate
    clock.now += 2.0
    pace.pause(1.0)
    assert pace.rate < min(rate, 100)


async def test_the_header_climbing_slows_the_pace_and_its_absence_speeds_it(clock: VirtualClock) -> None:
    """No header while spenders wait: faster; the header's first sight: halved; climbing: slower; falling: faster."""
    pace = RuPace(100)

    async def busy_second() -> None:  # spend more than the pace allows for one second
        end = clock.now + 1.0
        while clock.now < end:
            await pace.spend(10)

    await clock.run(asyncio.ensure_future(busy_second()))
    pace.observe(None)
    faster = pace.rate
    assert faster > 100
    pace.observe(0.82)  # the first sign of the limit ends the slow start at once
    assert pace.rate <= faster * CUT + 1e-9
    halved = pace.rate
    await clock.run(asyncio.ensure_future(busy_second()))
    pace.observe(0.9)
    assert pace.rate < halved  # climbing
    slower = pace.rate
    await clock.run(asyncio.ensure_future(busy_second()))
    pace.observe(0.86)
    assert pace.rate > slower  # falling: Graph's bucket refills faster than we spend


async def test_an_idle_pace_does_not_grow(clock: VirtualClock) -> None:
    """A pace nobody waited for is not known to be too slow: quiet answers leave it where it is."""
    pace = RuPace(100)
    await pace.spend(10)
    clock.now += 5
    pace.observe(None)
    assert pace.rate == 100


async def test_a_charge_never_waits_and_later_spenders_pay_its_debt(clock: VirtualClock) -> None:
    """`charge` takes RU at once, past empty; the next `spend` waits until the debt and its own RU are refilled."""
    pace = RuPace(10)  # 10 RU/s, a burst of a quarter second: 2.5 RU
    pace.charge(15)
    assert pace.spent == 15 and pace.waited_seconds == 0 and clock.now == 0.0
    # -12.5 RU; a spend bigger than the burst waits for a full burst (2.5 RU): 15 RU to refill at 10 RU/s
    await clock.run(asyncio.ensure_future(pace.spend(5)))
    assert pace.waited_seconds == pytest.approx(1.5) and pace.spent == 20


async def test_spenders_are_served_in_turn(clock: VirtualClock) -> None:
    """Concurrent spenders queue: each is served when the pace has its RU (at most a burst's), in the order they
    came; what a spender takes beyond the burst is a debt the next one waits out."""
    pace = RuPace(10)  # 10 RU/s, a burst of 2.5 RU
    pace.charge(pace.capacity)  # the burst spent
    served: list[tuple[str, float]] = []

    async def spender(name: str, units: float) -> None:
        await pace.spend(units)
        served.append((name, clock.now))

    await clock.run(asyncio.ensure_future(asyncio.gather(spender("a", 5), spender("b", 10), spender("c", 1))))
    assert [name for name, _ in served] == ["a", "b", "c"]
    assert [at for _, at in served] == pytest.approx([0.25, 0.75, 1.6])


async def test_reset_forgets_what_was_learned(clock: VirtualClock) -> None:
    """After `reset` the pace is the starting guess again, with no pause in force."""
    pace = RuPace()
    pace.pause(60)
    pace.reset()
    assert pace.rate == START_RU_PER_S
    await clock.run(asyncio.ensure_future(pace.spend(10)))
    assert pace.waited_seconds == 0


def test_the_starting_pace_must_be_positive() -> None:
    """A pace that could never send is refused when it is made."""
    with pytest.raises(ValueError, match="positive"):
        RuPace(0)
