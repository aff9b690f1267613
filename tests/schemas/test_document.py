"""The desired-state models (shared/schemas/document.py): the JSON Schema generated from them accepts and
rejects what the validator does, and only the rules it cannot state (documented in its description) differ."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import InputError
from shared.policy.document import validate_document
from shared.schemas.document import document_json_schema
from tests.policy.policy_factories import (
    ANDROID,
    GROUP_A,
    GROUP_B,
    IOS,
    ONEPASSWORD,
    YUBIKEY,
    ca_section,
    detail_of,
    doc,
    method,
    restrictions,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "shared/policy/desired-state.schema.json").read_text(encoding="utf-8"))
SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def test_the_committed_schema_is_the_models_schema() -> None:
    """desired-state.schema.json is the models' schema, and a valid draft 2020-12 schema."""
    assert document_json_schema() == SCHEMA
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_the_schema_describes_the_rules_only_the_validator_has() -> None:
    """The schema's description names the two rules a JSON Schema cannot state."""
    assert "case-insensitively" in SCHEMA["description"] and "keyRestrictions.remove" in SCHEMA["description"]


# --- schema agreement -------------------------------------------------------------------------------------
GOOD: list[dict[str, Any]] = [
    doc(),
    {"passkeyMethod": {"includeTargets": ["all_users"]}, "authenticationStrength": {"displayName": "S"}},
    doc(passkeyMethod=method(includeTargets=[GROUP_A, {"id": GROUP_B, "displayName": "B"}],
                             excludeTargets=[{"id": YUBIKEY}], passkeyProfile="Default passkey profile")),
    doc(passkeyMethod=method(keyRestrictions=restrictions(aaguids=[ANDROID.upper(), IOS, YUBIKEY],
                                                          remove=[ONEPASSWORD]))),
    doc(passkeyMethod=method(keyRestrictions=restrictions(enforcementType="block", aaguids=[ONEPASSWORD]))),
    doc(passkeyMethod=method(keyRestrictions=restrictions(enforced=False, aaguids=[], remove=[ANDROID]))),
    doc(passkeyMethod=method(state="disabled", selfServiceRegistration=False, attestationEnforced=True)),
    doc(aaguidNames={YUBIKEY: "YubiKey 5"}, conditionalAccess=ca_section()),
    doc(conditionalAccess=ca_section(includeUsers=[], includeGroups=[GROUP_A], state="enabled",
                                     includeApplications=["All"])),
    {**doc(), "$schema": "./x.json", "description": "ours"},
]

BAD: list[Any] = [
    [], "text", None, 3, {},
    doc(passkeyMethod=None),
    doc(authenticationStrength=None),
    doc(passkeyMethod=method(state="on")),
    doc(passkeyMethod=method(includeTargets=[])),
    doc(passkeyMethod=method(includeTargets=["all_users", GROUP_A])),
    doc(passkeyMethod=method(includeTargets=["group-a"])),
    doc(passkeyMethod=method(includeTargets=[{"id": GROUP_A, "extra": 1}])),
    doc(passkeyMethod=method(includeTargets=[{"displayName": "no id"}])),
    doc(passkeyMethod=method(includeTargets=[GROUP_A, GROUP_A])),
    doc(passkeyMethod=method(excludeTargets=["all_users"])),
    doc(passkeyMethod=method(selfServiceRegistration=1)),
    doc(passkeyMethod=method(attestationEnforced="false")),
    doc(passkeyMethod=method(keyRestrictions=restrictions(aaguids=[ANDROID]))),
    doc(passkeyMethod=method(keyRestrictions=restrictions(aaguids=[ANDROID, IOS, "x"]))),
    doc(passkeyMethod=method(keyRestrictions=restrictions(aaguids=[ANDROID, IOS, IOS]))),
    doc(passkeyMethod=method(keyRestrictions=restrictions(remove=[ANDROID]))),
    doc(passkeyMethod=method(keyRestrictions=restrictions(enforcementType="deny"))),
    doc(passkeyMethod=method(keyRestrictions=restrictions(enforced="yes"))),
    doc(passkeyMethod=method(keyRestrictions=[])),
    doc(passkeyMethod=method(passkeyProfile="  ")),
    doc(passkeyMethod=method(unknown=True)),
    doc(aaguidNames={"x": "y"}),
    doc(aaguidNames={YUBIKEY: 5}),
    doc(authenticationStrength={"displayName": "S", "allowedAaguids": []}),
    doc(authenticationStrength={"description": "no name"}),
    doc(conditionalAccess=ca_section(includeUsers=[], includeGroups=[])),
    doc(conditionalAccess=ca_section(includeApplications=[])),
    doc(conditionalAccess=ca_section(includeApplications=["Teams"])),
    doc(conditionalAccess=ca_section(state="enabledForReporting")),
    doc(conditionalAccess=ca_section(excludeGroups=["All"])),
    {**doc(), "extra": {}},
    {**doc(), "description": 5},
]


@pytest.mark.parametrize("document", GOOD)
def test_schema_and_validator_accept_good_documents(document: dict[str, Any]) -> None:
    """Both the JSON Schema and the validator accept each good document."""
    SCHEMA_VALIDATOR.validate(document)
    validate_document(document)


@pytest.mark.parametrize("document", BAD)
def test_schema_and_validator_reject_bad_documents(document: Any) -> None:
    """Both the JSON Schema and the validator reject each bad document."""
    assert not SCHEMA_VALIDATOR.is_valid(document)
    with pytest.raises(InputError):
        validate_document(document)


def test_validator_is_stricter_only_where_documented() -> None:
    """Case-only duplicates and keep-and-remove pass the schema but not the validator (module docstring)."""
    for document in (
        doc(passkeyMethod=method(keyRestrictions=restrictions(aaguids=[ANDROID, IOS, ANDROID.upper()]))),
        doc(passkeyMethod=method(keyRestrictions=restrictions(aaguids=[ANDROID, IOS, YUBIKEY], remove=[YUBIKEY]))),
    ):
        assert SCHEMA_VALIDATOR.is_valid(document)
        with pytest.raises(InputError):
            validate_document(document)


# --- fuzzing ------------------------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
INTERESTING = JSON | st.sampled_from(["all_users", "All", ANDROID, IOS, ANDROID.upper(), YUBIKEY, "", " ", "allow",
                                      "block", "enabled", True, False, [], {}, [ANDROID, IOS]])


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    """A valid document with one subtree replaced, deleted, or given an extra key."""
    base = copy.deepcopy(draw(st.sampled_from(GOOD)))
    path = draw(st.sampled_from(_paths(base)))
    if not path:
        return draw(INTERESTING)
    parent = base
    for step in path[:-1]:
        parent = parent[step]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace" or (action == "delete" and isinstance(parent, list)):
        parent[path[-1]] = draw(INTERESTING)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.sampled_from(["x", "id", "aaguids", "state", "remove"]))] = draw(INTERESTING)
    else:
        parent.append(draw(INTERESTING))
    return base


def _check_outcome(document: Any) -> bool:
    try:
        validate_document(document)
    except InputError as exc:
        assert isinstance(exc.detail, list) and exc.detail
        for p in exc.detail:
            assert isinstance(p["field"], str) and p["field"]
            assert isinstance(p["problem"], str) and p["problem"]
        return False
    return True


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_validator_never_crashes_on_arbitrary_json(document: Any) -> None:
    """Any JSON value either validates or raises InputError naming a field for every problem."""
    _check_outcome(document)


#: Problems only the validator finds (the schema cannot compare case-insensitively or across lists).
VALIDATOR_ONLY = ("duplicate of ", "also listed in aaguids", "duplicate AAGUID")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_documents())
def test_validator_and_schema_agree_on_mutated_documents(document: Any) -> None:
    """Whatever the schema rejects the validator rejects; what only the validator rejects is a documented rule."""
    try:
        validate_document(document)
        detail: list[dict[str, str]] = []
    except InputError as exc:
        detail = detail_of(exc)
    if not SCHEMA_VALIDATOR.is_valid(document):
        assert detail, list(SCHEMA_VALIDATOR.iter_errors(document))[:1]
    else:
        for p in detail:
            assert p["problem"].startswith(VALIDATOR_ONLY), p
