"""Stored plans: plan_to_json / plan_from_json round-trip every field, show each write's Graph request,
and refuse a malformed document naming the field."""
from __future__ import annotations

import json

import pytest

from shared.errors import InputError
from shared.policy.plan import build_plan
from shared.policy.plan_codec import plan_from_json, plan_to_json
from tests.policy.policy_factories import (
    ANDROID,
    IOS,
    YUBIKEY,
    ca_section,
    desired,
    detail_of,
    legacy_fido2,
    rich_plan,
    strength,
)


def test_round_trip_preserves_everything() -> None:
    """plan_from_json(plan_to_json(p)) equals p, also through real JSON text."""
    plan = rich_plan()
    doc = plan_to_json(plan)
    assert doc["requiresAcceptance"] is True and doc["empty"] is False
    again = plan_from_json(json.loads(json.dumps(doc)))
    assert again == plan
    assert plan_to_json(again) == doc


def test_round_trip_of_an_empty_plan() -> None:
    """An empty plan round-trips and stays empty."""
    plan = build_plan(desired(), legacy_fido2(), [strength(aaguids=[ANDROID, IOS])], [], {})
    again = plan_from_json(plan_to_json(plan))
    assert again.empty and again == plan


def test_stored_writes_show_the_request_each_write_becomes() -> None:
    """Each stored write names its Graph method and path (derived, not held by the plan); loading drops them."""
    state = desired(conditionalAccess=ca_section(excludeUsers=[]))
    plan = build_plan(state, legacy_fido2(aaguids=[YUBIKEY], mode="allow"), [], [], {})
    shown = [(w["op"], w["method"], w["path"]) for w in plan_to_json(plan)["writes"]]
    strengths = "/policies/authenticationStrengthPolicies"
    assert shown == [
        ("patch_fido2", "PATCH", "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"),
        ("create_strength", "POST", strengths),
        ("create_combination_configuration", "POST", f"{strengths}/{{{{strength.id}}}}/combinationConfigurations"),
        ("create_ca_policy", "POST", "/identity/conditionalAccess/policies")]
    assert all("path" not in w and "method" not in w for w in plan_from_json(plan_to_json(plan)).writes)


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.update(writes=[{"op": "delete_everything", "path": "/", "body": {}}]), "writes[0].op"),
    (lambda d: d.update(writes="x"), "writes"),
    (lambda d: d.pop("stateHash"), "stateHash"),
    (lambda d: d["changes"][0].pop("area"), "changes[0].area"),
    (lambda d: d.update(methodAfter=[]), "methodAfter"),
])
def test_malformed_stored_plan_is_an_input_error(mutate: object, field: str) -> None:
    """A damaged stored plan raises InputError naming the field."""
    doc = plan_to_json(rich_plan())
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(InputError) as info:
        plan_from_json(doc)
    assert detail_of(info.value)[0]["field"] == field


def test_plan_from_json_rejects_non_objects() -> None:
    """A stored plan must be a JSON object."""
    with pytest.raises(InputError):
        plan_from_json([1])
