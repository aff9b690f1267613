"""Resource-unit and write throttling, the SDK's retry on 429, and injected faults."""
from __future__ import annotations

import asyncio
import http.client
import time
import urllib.error
from collections.abc import Iterator

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from graphsim.launcher import Simulator
from tests.graphsim.conftest import (
    araw,
    base_tenant,
    frozen_throttle_clock,
    no_retry,
    raw,
    sdk_backoff_moves_the_clock,
    start,
    uid,
)

TENANT_ID = "11111111-1111-4111-8111-111111111111"
DEFAULTS = {"throttle_enabled": True, "throttle_capacity_ru": 8000, "throttle_refill_ru_per_s": 800,
            "throttle_scale": 1.0, "throttle_charge_rejected": True, "write_capacity": 3000, "write_refill_per_s": 20,
            "fault_429_rate": 0, "fault_503_rate": 0, "fault_504_rate": 0, "fault_drop_rate": 0,
            "graph_paused": False}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A small tenant."""
    yield from start(base_tenant(5))


@pytest.fixture(autouse=True)
def reset(sim: Simulator) -> Iterator[None]:
    """Every test starts and ends with Graph's default limits, no faults and full buckets, on a frozen
    throttle clock: buckets refill only when a test (or the SDK's retry sleep) moves it."""
    sim.configure(**DEFAULTS)
    with frozen_throttle_clock(sim):
        yield
    sim.configure(**DEFAULTS)


def test_tiny_bucket_answers_429_with_retry_after_and_throttle_headers(sim: Simulator) -> None:
    """When the RU bucket is empty: 429, integer Retry-After, scope and information headers, usage percentage."""
    sim.configure(throttle_capacity_ru=3, throttle_refill_ru_per_s=0.5)
    first = raw(sim, "GET", f"/users/{uid(1)}")
    assert first.status == 200 and "x-ms-throttle-limit-percentage" not in first.headers
    raw(sim, "GET", f"/users/{uid(1)}")
    third = raw(sim, "GET", f"/users/{uid(1)}")
    assert third.status == 200 and float(third.headers["x-ms-throttle-limit-percentage"]) >= 0.8
    fourth = raw(sim, "GET", f"/users/{uid(1)}")
    assert fourth.status == 429 and fourth.body["error"]["code"] == "TooManyRequests"
    assert int(fourth.headers["Retry-After"]) >= 2           # 1 RU missing at 0.5 RU/s
    scope = fourth.headers["x-ms-throttle-scope"].split("/")
    assert scope[:2] == ["Tenant_Application", "ReadWrite"] and scope[3] == TENANT_ID and scope[2]
    assert fourth.headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    assert sim.stats()["throttled"]["ru"] >= 1


def test_retry_after_grows_with_the_deficit(sim: Simulator) -> None:
    """A 2-RU list call on an empty bucket must wait longer than a 1-RU read."""
    sim.configure(throttle_capacity_ru=1, throttle_refill_ru_per_s=0.1, throttle_charge_rejected=False)
    assert raw(sim, "GET", f"/users/{uid(1)}").status == 200
    one = int(raw(sim, "GET", f"/users/{uid(1)}").headers["Retry-After"])
    two = int(raw(sim, "GET", "/users").headers["Retry-After"])
    assert two > one >= 1


def test_throttle_scale_multiplies_the_bucket(sim: Simulator) -> None:
    """throttle_scale=2 doubles capacity: 6 one-RU calls pass on a 3-RU bucket, the 7th does not."""
    sim.configure(throttle_capacity_ru=3, throttle_refill_ru_per_s=0.01, throttle_scale=2.0)
    statuses = [raw(sim, "GET", f"/users/{uid(1)}").status for _ in range(7)]
    assert statuses == [200] * 6 + [429]


def test_throttling_can_be_disabled(sim: Simulator) -> None:
    """throttle_enabled=false lets everything through whatever the bucket size."""
    sim.configure(throttle_capacity_ru=1, throttle_refill_ru_per_s=0.01, throttle_enabled=False)
    assert {raw(sim, "GET", f"/users/{uid(1)}").status for _ in range(5)} == {200}


def test_write_limit_is_separate(sim: Simulator) -> None:
    """Writes have their own bucket: a third PATCH on a 2-write bucket gets WriteLimitExceeded."""
    sim.configure(write_capacity=2, write_refill_per_s=0.01)
    codes = [raw(sim, "PATCH", f"/users/{uid(2)}", {"displayName": f"W{i}"}) for i in range(3)]
    assert [c.status for c in codes] == [204, 204, 429]
    assert codes[2].headers["x-ms-throttle-information"] == "WriteLimitExceeded"
    assert raw(sim, "GET", f"/users/{uid(2)}").status == 200      # reads still pass


async def test_sdk_retry_handler_honours_retry_after_and_succeeds(client: GraphServiceClient, sim: Simulator,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With Retry-After: 1 the SDK's retry handler waits and its retry succeeds."""
    slept = sdk_backoff_moves_the_clock(sim, monkeypatch)
    sim.configure(throttle_capacity_ru=1, throttle_refill_ru_per_s=2)
    assert raw(sim, "GET", f"/users/{uid(3)}").status == 200
    sim.reset_stats()
    retry = RequestConfiguration(options=[RetryHandlerOption(max_retries=3)])
    got = await client.users.by_user_id(uid(3)).get(request_configuration=retry)
    assert got.id == uid(3)
    stats = sim.stats()
    assert stats["calls"]["by_status"].get("429", 0) >= 1 and stats["calls"]["by_status"]["200"] == 1
    assert slept and all(seconds == 1 for seconds in slept)  # it waited what Retry-After said


async def test_sdk_without_retries_surfaces_429(client: GraphServiceClient, sim: Simulator) -> None:
    """With retries off, the SDK raises ODataError 429 TooManyRequests."""
    sim.configure(throttle_capacity_ru=1, throttle_refill_ru_per_s=0.01)
    raw(sim, "GET", f"/users/{uid(3)}")
    with pytest.raises(ODataError) as info:
        await client.users.by_user_id(uid(3)).get(request_configuration=no_retry())
    assert info.value.response_status_code == 429 and info.value.error.code == "TooManyRequests"


@pytest.mark.parametrize(("knob", "status", "code"), [
    ("fault_503_rate", 503, "serviceNotAvailable"), ("fault_504_rate", 504, "UnknownError"),
    ("fault_429_rate", 429, "TooManyRequests")])
def test_injected_status_faults(sim: Simulator, knob: str, status: int, code: str) -> None:
    """Fault rates of 1 answer every Graph call with that status and Graph's envelope."""
    sim.configure(**{knob: 1.0, "fault_429_retry_after_s": 7})
    resp = raw(sim, "GET", f"/users/{uid(1)}")
    assert resp.status == status and resp.body["error"]["code"] == code
    if status == 429:
        assert resp.headers["Retry-After"] == "7"
    assert sim.stats()["faults"][str(status)] >= 1


async def test_graph_paused_holds_requests_until_unpaused(sim: Simulator) -> None:
    """graph_paused holds every Graph call (counted as graph_held) while /_sim answers; unpausing lets them on."""
    sim.configure(graph_paused=True)
    held = asyncio.create_task(araw(sim, "GET", f"/users/{uid(1)}"))
    deadline = time.monotonic() + 30
    while (await asyncio.to_thread(sim.stats))["graph_held"] < 1:
        assert time.monotonic() < deadline, "the call was never held"
        await asyncio.sleep(0.02)
    assert not held.done()
    sim.configure(graph_paused=False)
    assert (await held).status == 200
    assert sim.stats()["graph_held"] == 0


def test_dropped_connections_and_control_paths_are_exempt(sim: Simulator) -> None:
    """fault_drop_rate=1 closes every Graph connection without an answer; /_sim keeps working."""
    sim.configure(fault_drop_rate=1.0)
    with pytest.raises((urllib.error.URLError, http.client.RemoteDisconnected, ConnectionError)):
        raw(sim, "GET", f"/users/{uid(1)}")
    assert sim.stats()["faults"]["drop"] >= 1


def test_outer_batch_is_free_and_items_pay(sim: Simulator) -> None:
    """The $batch envelope costs nothing; its items pay their own RU."""
    sim.reset_stats()
    reqs = [{"id": str(n), "method": "GET", "url": f"/users/{uid(n)}/authentication/fido2Methods"} for n in (1, 2)]
    resp = raw(sim, "POST", "/$batch", {"requests": reqs})
    assert resp.status == 200 and resp.headers["x-ms-resource-unit"] == "0"
    assert sim.stats()["resource_units"] == 2

