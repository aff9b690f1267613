"""Whole `$batch` envelopes answered 429 or 503 (issue 13 item 6): Graph's envelope, before any item runs,
only for the envelope, and repeatable with `fault_seed`."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from graphsim.launcher import Simulator
from tests.graphsim.conftest import Raw, base_tenant, raw, start, uid

CALM = {"fault_batch_429_rate": 0.0, "fault_batch_503_rate": 0.0, "fault_429_retry_after_s": 1, "fault_seed": None}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A small tenant."""
    yield from start(base_tenant(5))


@pytest.fixture(autouse=True)
def calm(sim: Simulator) -> Iterator[None]:
    """No envelope faults before or after each test; fresh counters and buckets."""
    sim.configure(**CALM)
    sim.control("POST", "throttle/reset")
    sim.reset_stats()
    yield
    sim.configure(**CALM)


def _batch(sim: Simulator) -> Raw:
    reads = [{"id": str(n), "method": "GET", "url": f"/users/{uid(n)}/authentication/fido2Methods"} for n in (1, 2, 3)]
    return raw(sim, "POST", "/$batch", {"requests": reads})


@pytest.mark.parametrize(("knob", "status", "code"), [("fault_batch_429_rate", 429, "TooManyRequests"),
                                                      ("fault_batch_503_rate", 503, "serviceNotAvailable")])
def test_an_envelope_can_be_refused_whole_before_any_item_runs(sim: Simulator, knob: str, status: int,
                                                               code: str) -> None:
    """At rate 1 the envelope itself answers 429 (with Retry-After) or 503 in Graph's error envelope, and none
    of its items ran: no item call, no resource unit."""
    sim.configure(**{knob: 1.0, "fault_429_retry_after_s": 4})
    answer = _batch(sim)
    assert answer.status == status and answer.body["error"]["code"] == code
    assert set(answer.body["error"]["innerError"]) == {"date", "request-id", "client-request-id"}
    if status == 429:
        assert answer.headers["Retry-After"] == "4"
    stats = sim.stats()
    assert stats["faults"] == {f"batch_{status}": 1}
    assert stats["resource_units"] == 0 and stats["batch"] == {"requests": 0, "items": 0}
    assert set(stats["calls"]["by_route"]) == {"POST /$batch"}


def test_envelope_faults_touch_neither_direct_calls_nor_control_paths(sim: Simulator) -> None:
    """Direct Graph calls and /_sim answer normally while every envelope is refused."""
    sim.configure(fault_batch_429_rate=1.0)
    assert raw(sim, "GET", f"/users/{uid(1)}").status == 200
    assert sim.control("GET", "health")["ok"]
    assert _batch(sim).status == 429


def test_a_seed_repeats_which_envelopes_are_refused(sim: Simulator) -> None:
    """With the same fault_seed, the same envelopes of a run are refused; the rate is honoured roughly."""
    def run() -> list[int]:
        sim.configure(fault_seed=None)
        sim.configure(fault_batch_429_rate=0.3, fault_batch_503_rate=0.2, fault_seed=11)
        return [_batch(sim).status for _ in range(40)]

    first, again = run(), run()
    assert first == again
    assert {200, 429, 503} == set(first)
