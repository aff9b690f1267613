"""Latency (issue 13 item 1): the log-normal draw with a given median and p99, the part that grows with page
and `$batch` size, and that every Graph answer (never `/_sim`) waits it."""
from __future__ import annotations

import random
import statistics
import time
from collections.abc import Iterator

import pytest

from graphsim.config import REALISTIC_LATENCY, SimConfig
from graphsim.faults import Faults, draw_latency_ms
from graphsim.launcher import Simulator
from tests.graphsim.conftest import base_tenant, raw, start, uid

CALM = {"latency_ms": 0.0, "latency_p99_ms": 0.0, "latency_per_item_ms": 0.0, "fault_seed": None}


def _quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.mark.parametrize(("median", "p99"), [(150.0, 800.0), (40.0, 60.0), (300.0, 3000.0)])
def test_draws_have_the_asked_median_and_p99(median: float, p99: float) -> None:
    """Of 40,000 seeded draws, the median and the 99th percentile land within 3 % and 6 % of the knobs."""
    rng = random.Random(13)
    draws = [draw_latency_ms(rng, median, p99) for _ in range(40_000)]
    assert statistics.median(draws) == pytest.approx(median, rel=0.03)
    assert _quantile(draws, 0.99) == pytest.approx(p99, rel=0.06)
    assert min(draws) > 0


def test_a_p99_at_or_below_the_median_means_a_fixed_latency_and_zero_means_none() -> None:
    """latency_ms alone is a fixed wait (what older tests set); a median of 0 adds nothing."""
    rng = random.Random(1)
    assert {draw_latency_ms(rng, 40.0, 0.0) for _ in range(50)} == {40.0}
    assert {draw_latency_ms(rng, 40.0, 40.0) for _ in range(50)} == {40.0}
    assert draw_latency_ms(rng, 0.0, 800.0) == 0.0
    assert Faults(SimConfig()).latency_s() == 0.0 and Faults(SimConfig()).size_latency_s(999) == 0.0


def test_fault_seed_repeats_the_latency_sequence_without_moving_the_fault_sequence() -> None:
    """The same fault_seed draws the same latencies; latency draws do not shift which requests get faults."""
    def run(latency: bool) -> tuple[list[float], list[int | None]]:
        cfg = SimConfig(fault_seed=5, fault_503_rate=0.3, **(REALISTIC_LATENCY if latency else {}))
        faults = Faults(cfg)
        delays, statuses = [], []
        for _ in range(200):
            delays.append(faults.latency_s())
            statuses.append(faults.status())
        return delays, statuses

    first, again, calm = run(True), run(True), run(False)
    assert first == again and len(set(first[0])) > 100
    assert first[1] == calm[1]  # the same requests fail with or without latency


def test_the_size_part_grows_with_the_items() -> None:
    """latency_per_item_ms is paid per object of a page or per request of a $batch."""
    faults = Faults(SimConfig(latency_per_item_ms=2.0))
    assert faults.size_latency_s(0) == 0.0
    assert faults.size_latency_s(20) == pytest.approx(0.040)
    assert faults.size_latency_s(999) == pytest.approx(1.998)


def test_the_realistic_preset_is_the_issues_150_and_800() -> None:
    """Benchmarks' preset: median 150 ms, p99 800 ms (issue 13), and it is a valid set of knobs."""
    assert REALISTIC_LATENCY["latency_ms"] == 150.0 and REALISTIC_LATENCY["latency_p99_ms"] == 800.0
    assert SimConfig().update(dict(REALISTIC_LATENCY)) == sorted(REALISTIC_LATENCY)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A small tenant with calm defaults."""
    yield from start(base_tenant(5))


@pytest.fixture(autouse=True)
def calm(sim: Simulator) -> Iterator[None]:
    """No latency before or after each test."""
    sim.configure(**CALM)
    sim.reset_stats()
    yield
    sim.configure(**CALM)


def test_a_graph_answer_waits_its_latency_and_control_paths_do_not(sim: Simulator) -> None:
    """A fixed 60 ms plus 1 ms per user of a 3-user page: the page waits 63 ms, counted once; /_sim waits nothing."""
    sim.configure(latency_ms=60.0, latency_per_item_ms=1.0)
    started = time.monotonic()
    page = raw(sim, "GET", "/users?$top=3")
    elapsed = time.monotonic() - started
    assert page.status == 200 and len(page.body["value"]) == 3
    assert elapsed >= 0.063  # a lower bound only: the wait happened
    latency = sim.stats()["latency"]
    assert latency == {"delayed": 1, "seconds": pytest.approx(0.063)}
    sim.control("GET", "health")
    assert sim.stats()["latency"]["delayed"] == 1


def test_each_batch_item_waits_its_own_latency_inside_the_envelope(sim: Simulator) -> None:
    """A $batch of 3 waits its own 50 ms plus 1 ms per request, and each item waits its own 50 ms."""
    sim.configure(latency_ms=50.0, latency_per_item_ms=1.0)
    reqs = [{"id": str(n), "method": "GET", "url": f"/users/{uid(n)}"} for n in (1, 2, 4)]
    started = time.monotonic()
    resp = raw(sim, "POST", "/$batch", {"requests": reqs})
    elapsed = time.monotonic() - started
    assert resp.status == 200 and {r["status"] for r in resp.body["responses"]} == {200}
    assert elapsed >= 0.05 + 0.05 + 0.003  # envelope, then the items side by side, then the size part
    latency = sim.stats()["latency"]
    assert latency == {"delayed": 4, "seconds": pytest.approx(0.05 + 0.003 + 3 * 0.05)}
