"""The tenant's authentication-method limit (issue 13 item 2): `users/{id}/authentication/*` at
`auth_methods_rps` per tenant across apps, each `$batch` item counted, 429 with Retry-After in the RU
throttle's shape. Every test runs on a frozen throttle clock, so the bucket refills only when it moves."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from graphsim.launcher import Simulator
from tests.graphsim.conftest import TOKEN, base_tenant, frozen_throttle_clock, raw, start, uid

TENANT_ID = "11111111-1111-4111-8111-111111111111"
DEFAULTS = {"auth_methods_rps": 6.0, "auth_methods_window_s": 1.0, "throttle_enabled": True,
            "throttle_charge_rejected": True}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """30 users, every third with a YubiKey."""
    yield from start(base_tenant(30))


@pytest.fixture(autouse=True)
def frozen(sim: Simulator) -> Iterator[None]:
    """Default limits and a full bucket on a frozen clock (moved past any earlier test's calls)."""
    sim.configure(**DEFAULTS)
    with frozen_throttle_clock(sim, past=60.0):
        sim.reset_stats()
        yield
    sim.configure(**DEFAULTS)


def _passkeys(sim: Simulator, n: int, token: str = TOKEN) -> int:
    return raw(sim, "GET", f"/users/{uid(n)}/authentication/fido2Methods", token=token).status


def test_the_default_is_six_calls_a_second_then_429_with_retry_after(sim: Simulator) -> None:
    """Six passkey reads pass, the seventh is a 429 with Retry-After 1 and the throttle's headers and envelope."""
    assert [_passkeys(sim, n) for n in range(1, 7)] == [200] * 6
    refused = raw(sim, "GET", f"/users/{uid(7)}/authentication/fido2Methods")
    assert refused.status == 429 and refused.body["error"]["code"] == "TooManyRequests"
    assert {"date", "request-id", "client-request-id"} == set(refused.body["error"]["innerError"])
    assert refused.headers["request-id"] == refused.body["error"]["innerError"]["request-id"]
    assert refused.headers["Retry-After"] == "1"
    scope = refused.headers["x-ms-throttle-scope"].split("/")
    assert scope[0] == "Tenant" and scope[3] == TENANT_ID
    assert refused.headers["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    assert float(refused.headers["x-ms-throttle-limit-percentage"]) >= 1.0
    assert sim.stats()["throttled"]["auth_methods"] == 1


def test_the_bucket_refills_with_the_throttle_clock(sim: Simulator) -> None:
    """A refused read passes once the clock moved by its Retry-After; half a second refills three calls (a
    half, not a third: a third of a second is not a binary fraction, and its refill came out a hair under two
    calls now and then)."""
    for n in range(1, 7):
        _passkeys(sim, n)
    assert _passkeys(sim, 7) == 429
    sim.throttle_clock(advance=1.0)
    assert [_passkeys(sim, n) for n in range(7, 14)] == [200] * 6 + [429]
    sim.throttle_clock(advance=0.5)
    assert [_passkeys(sim, n) for n in (14, 15, 16, 17)] == [200, 200, 200, 429]


def test_every_batch_item_counts_and_only_authentication_paths_do(sim: Simulator) -> None:
    """A $batch of 20 passkey reads: 6 pass, 14 are 429 items with Retry-After; user reads are not limited."""
    reads = [{"id": str(n), "method": "GET", "url": f"/users/{uid(n)}/authentication/fido2Methods"}
             for n in range(1, 21)]
    answer = raw(sim, "POST", "/$batch", {"requests": reads})
    assert answer.status == 200
    statuses = sorted(r["status"] for r in answer.body["responses"])
    assert statuses == [200] * 6 + [429] * 14
    assert {r["headers"]["Retry-After"] for r in answer.body["responses"] if r["status"] == 429} == {"1"}
    users = [{"id": str(n), "method": "GET", "url": f"/users/{uid(n)}"} for n in range(1, 21)]
    assert {r["status"] for r in raw(sim, "POST", "/$batch", {"requests": users}).body["responses"]} == {200}


def test_the_limit_is_per_tenant_across_apps_and_deletes_count(sim: Simulator) -> None:
    """Two apps share one bucket, and a passkey DELETE spends from it like a read."""
    assert [_passkeys(sim, n, token=f"app-{n % 2}") for n in range(1, 6)] == [200] * 5
    key = raw(sim, "GET", f"/users/{uid(3)}/authentication/fido2Methods", token="app-2").body["value"][0]
    gone = raw(sim, "DELETE", f"/users/{uid(3)}/authentication/fido2Methods/{key['id']}", token="app-3")
    assert gone.status == 429 and _passkeys(sim, 1, token="app-4") == 429


def test_a_refused_call_spends_its_resource_units_unless_refused_calls_are_free(sim: Simulator) -> None:
    """Like Graph's RU bucket ("usage still counts while throttled"): the refused read's 1 RU is charged,
    and given back when throttle_charge_rejected is off."""
    for n in range(1, 7):
        _passkeys(sim, n)
    before = sim.stats()["resource_units"]
    assert _passkeys(sim, 7) == 429
    assert sim.stats()["resource_units"] == before + 1
    sim.configure(throttle_charge_rejected=False)  # a throttle knob: the buckets start full again
    for n in range(1, 7):
        _passkeys(sim, n)
    before = sim.stats()["resource_units"]
    assert _passkeys(sim, 7) == 429
    assert sim.stats()["resource_units"] == before


@pytest.mark.parametrize("knobs", [{"auth_methods_rps": 0.0}, {"throttle_enabled": False}])
def test_the_limit_can_be_switched_off(sim: Simulator, knobs: dict[str, object]) -> None:
    """auth_methods_rps <= 0, or throttling off, lets every authentication-method call through."""
    sim.configure(**knobs)
    assert {_passkeys(sim, n) for n in range(1, 21)} == {200}


def test_a_wider_window_is_a_bigger_burst_at_the_same_rate(sim: Simulator) -> None:
    """auth_methods_window_s=10 lets 60 calls through at once, then the refill is still 6 a second."""
    sim.configure(auth_methods_window_s=10.0)
    assert [_passkeys(sim, 1 + n % 30) for n in range(61)] == [200] * 60 + [429]
    sim.throttle_clock(advance=1.0)
    assert [_passkeys(sim, n) for n in range(1, 8)] == [200] * 6 + [429]
