"""Pure pieces of the simulator: filter parsing, knobs, bucket arithmetic, faults, tenant generation."""
from __future__ import annotations

import pytest

from graphsim import throttle as throttle_module
from graphsim.config import SimConfig
from graphsim.errors import GraphApiError
from graphsim.odata import candidate_ids, compile_filter, parse_filter, uses_advanced
from graphsim.routing import split_path
from graphsim.store import TenantStore
from graphsim.tenant import generate_users
from graphsim.throttle import Throttle

USER = {"id": "A1", "userPrincipalName": "Jo.Smith@Contoso.example", "accountEnabled": True,
        "allowedCombinations": ["password,sms", "fido2"], "displayName": "Jo"}


@pytest.mark.parametrize(("expr", "expected"), [
    ("startswith(userPrincipalName,'jo.')", True),
    ("endswith(userPrincipalName,'@contoso.example')", True),
    ("userPrincipalName eq 'jo.smith@contoso.example'", True),
    ("accountEnabled eq false", False),
    ("id in ('x','a1')", True),
    ("not (displayName eq 'Jo')", False),
    ("displayName eq 'Jo' and (accountEnabled eq true or id eq 'zz')", True),
    ("allowedCombinations/any(x:x has 'sms')", True),
    ("allowedCombinations/any(x:x eq 'sms')", False),
    ("displayName eq 'O''Brien'", False),
])
def test_filter_evaluation(expr: str, expected: bool) -> None:
    """Filters evaluate case-insensitively over plain dicts."""
    assert compile_filter(parse_filter(expr), lambda name: name)(USER) is expected


@pytest.mark.parametrize("expr", ["displayName eq", "startswith(displayName)", "a lt", "x/all(y:y eq 'a')", "(("])
def test_bad_filters_are_400(expr: str) -> None:
    """Malformed or unsupported filters raise Graph's 400."""
    with pytest.raises(GraphApiError) as info:
        parse_filter(expr)
    assert info.value.status == 400


def test_candidate_ids_and_advanced_detection() -> None:
    """id eq / id in / or-ed ids become index lookups; endswith and ne need advanced query."""
    assert candidate_ids(parse_filter("id eq 'A' or id in ('b','C')")) == {"a", "b", "c"}
    assert candidate_ids(parse_filter("id eq 'a' and displayName eq 'x'")) == {"a"}
    assert candidate_ids(parse_filter("displayName eq 'x'")) is None
    assert uses_advanced(parse_filter("endswith(userPrincipalName,'@x')"))
    assert not uses_advanced(parse_filter("startswith(userPrincipalName,'x')"))


def test_split_path_unfolds_key_and_function_forms() -> None:
    """users('a@b') and delta() become plain segments; percent-encoding is decoded."""
    assert split_path("/users('o''neil%40x.com')/authentication") == ["users", "o'neil@x.com", "authentication"]
    assert split_path("/users/delta()") == ["users", "delta"]
    assert split_path("/users/%24x%40y.com") == ["users", "$x@y.com"]


def test_config_update_is_all_or_nothing() -> None:
    """A bad knob in a batch of changes leaves every knob as it was."""
    cfg = SimConfig()
    with pytest.raises(ValueError, match="fault_503_rate"):
        cfg.update({"latency_ms": 5, "fault_503_rate": 1.5})
    assert cfg.latency_ms == 0.0


class FakeClock:
    """A settable stand-in for time.monotonic."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_refills_continuously_and_computes_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 10-RU bucket refilling 2 RU/s: full at start, Retry-After from the deficit, exact refill."""
    clock = FakeClock()
    monkeypatch.setattr(throttle_module.time, "monotonic", clock)
    cfg = SimConfig(throttle_capacity_ru=10, throttle_refill_ru_per_s=2, throttle_charge_rejected=False)
    t = Throttle(cfg)
    assert all(t.charge("app", 2, False).allowed for _ in range(5))
    denied = t.charge("app", 2, False)
    assert not denied.allowed and denied.retry_after == 1 and denied.information == "ResourceUnitLimitExceeded"
    clock.now += 0.5
    assert not t.charge("app", 2, False).allowed          # 1 RU accrued, 2 needed
    clock.now += 0.5
    assert t.charge("app", 2, False).allowed
    assert t.charge("other-app", 2, False).allowed         # buckets are per app


def test_rejected_calls_are_charged_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """With throttle_charge_rejected the bucket goes into debt (capped at one bucket) and Retry-After grows."""
    clock = FakeClock()
    monkeypatch.setattr(throttle_module.time, "monotonic", clock)
    t = Throttle(SimConfig(throttle_capacity_ru=4, throttle_refill_ru_per_s=1))
    assert t.charge("app", 4, False).allowed
    first = t.charge("app", 1, False)
    second = t.charge("app", 1, False)
    assert second.retry_after > first.retry_after
    for _ in range(20):
        t.charge("app", 1, False)
    assert t.ru["app"].level == -4


def test_scale_and_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """throttle_scale multiplies both buckets; writes need a write token as well as RU."""
    clock = FakeClock()
    monkeypatch.setattr(throttle_module.time, "monotonic", clock)
    t = Throttle(SimConfig(throttle_capacity_ru=100, write_capacity=1, write_refill_per_s=0.5, throttle_scale=2))
    assert t.charge("app", 1, True).allowed and t.charge("app", 1, True).allowed
    denied = t.charge("app", 1, True)
    assert not denied.allowed and denied.information == "WriteLimitExceeded"


def test_frozen_throttle_clock_moves_only_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frozen clock ignores real time and moves by `advance`; released, it runs on from where it stood."""
    clock = FakeClock()
    monkeypatch.setattr(throttle_module.time, "monotonic", clock)
    t = Throttle(SimConfig(ca_requests_per_second=5.0))
    t.clock.freeze(True)
    assert t.ca_allowed()
    clock.now += 10.0                                      # real time passes; the frozen clock does not
    assert not t.ca_allowed()
    t.clock.advance(0.25)
    assert t.ca_allowed()
    t.clock.freeze(False)
    clock.now += 0.1
    assert t.clock.now() == pytest.approx(100.35) and not t.ca_allowed()
    with pytest.raises(ValueError):
        t.clock.advance(-1.0)


def test_generated_users_are_deterministic() -> None:
    """The same seed makes the same tenant; the passkey ratio is honoured roughly."""
    one, two = TenantStore(), TenantStore()
    generate_users(one, {"users": 2000, "passkeyRatio": 0.25, "seed": 9})
    generate_users(two, {"users": 2000, "passkeyRatio": 0.25, "seed": 9})
    assert [u.id for u in one.user_order] == [u.id for u in two.user_order]
    assert 400 < sum(1 for u in one.user_order if u.fido2) < 600
