"""verify and plan agree: whenever the plan would change a field, some check fails, for every kind of change
the plan can contain (issue 11: verify said COMPLIANT while plan showed a Conditional Access change)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

from shared.policy.checks import build_check_context, run_checks
from shared.policy.document import DesiredState
from shared.policy.plan_model import Plan
from tests.policy.policy_factories import (
    ANDROID,
    APP,
    BREAK_GLASS,
    GROUP_A,
    GROUP_B,
    IOS,
    YUBIKEY,
    ca_policy,
    ca_section,
    desired,
    legacy_fido2,
    method,
    profile,
    profiles_fido2,
    restrictions,
    strength,
)
from tests.policy.test_plan_properties import SETTINGS, documents, plan_of, raw_cas, raw_fido2, raw_strengths

PLAN_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "policy" / "plan.py"
GOOD = [strength(aaguids=[ANDROID, IOS])]
CA_DOC = ca_section(includeUsers=[], includeGroups=[GROUP_A])
CA_OK = ca_policy(include_users=[], include_groups=[GROUP_A])


def _ca(**fields: Any) -> dict[str, Any]:
    return desired(conditionalAccess=ca_section(includeUsers=[], includeGroups=[GROUP_A], **fields))


#: One tenant state per kind of change the plan can contain: (document, fido2, strengths, CA policies, field).
SCENARIOS: dict[str, tuple[DesiredState, dict[str, Any], list[Any], list[Any], str]] = {
    "method state": (desired(passkeyMethod=method(state="disabled")), legacy_fido2(), GOOD, [], "state"),
    "self-service": (desired(passkeyMethod=method(selfServiceRegistration=False)), legacy_fido2(), GOOD, [],
                     "isSelfServiceRegistrationAllowed"),
    "include targets": (desired(passkeyMethod=method(includeTargets=[GROUP_A])), legacy_fido2(), GOOD, [],
                        "includeTargets"),
    "exclude targets": (desired(passkeyMethod=method(excludeTargets=[GROUP_B])), legacy_fido2(), GOOD, [],
                        "excludeTargets"),
    "legacy attestation": (desired(passkeyMethod=method(attestationEnforced=True)), legacy_fido2(), GOOD, [],
                           "isAttestationEnforced"),
    "profile attestation": (desired(), profiles_fido2([profile(attestation="registrationOnly")]), GOOD, [],
                            "attestationEnforcement"),
    "restrictions enforced": (desired(passkeyMethod=method(keyRestrictions=restrictions(enforced=False))),
                              legacy_fido2(), GOOD, [], "keyRestrictions.isEnforced"),
    "restrictions type": (desired(passkeyMethod=method(keyRestrictions=restrictions(enforcementType="block",
                                                                                     aaguids=[YUBIKEY]))),
                          legacy_fido2(), GOOD, [], "keyRestrictions.enforcementType"),
    "block list grows": (desired(passkeyMethod=method(keyRestrictions=restrictions(enforcementType="block",
                                                                                    aaguids=[YUBIKEY]))),
                         legacy_fido2(mode="block", aaguids=[]), GOOD, [], "keyRestrictions.aaGuids"),
    "removed aaguid": (desired(passkeyMethod=method(keyRestrictions=restrictions(remove=[YUBIKEY]))),
                       legacy_fido2(aaguids=[ANDROID, IOS, YUBIKEY]), GOOD, [], "keyRestrictions.aaGuids"),
    "profile aaguids": (desired(), profiles_fido2([profile(aaguids=[ANDROID])]), GOOD, [],
                        "keyRestrictions.aaGuids"),
    "new strength": (desired(), legacy_fido2(), [], [], "allowedCombinations"),
    "strength description": (desired(), legacy_fido2(), [strength(aaguids=[ANDROID, IOS], description="Other")], [],
                             "description"),
    "strength display name case": (desired(), legacy_fido2(),
                                   [strength(name="AUTHENTICATOR PASSKEY", aaguids=[ANDROID, IOS])], [],
                                   "displayName"),
    "strength combinations": (desired(), legacy_fido2(),
                              [strength(combos=["fido2", "password,sms"], aaguids=[ANDROID, IOS])], [],
                              "allowedCombinations"),
    "strength any passkey": (desired(), legacy_fido2(), [strength()], [], "allowedAAGUIDs"),
    "strength aaguids": (desired(), legacy_fido2(), [strength(aaguids=[ANDROID])], [], "allowedAAGUIDs"),
    "strength applies to": (desired(), legacy_fido2(), [{
        **strength(aaguids=[ANDROID, IOS]),
        "combinationConfigurations": [{"@odata.type": "#microsoft.graph.fido2CombinationConfiguration", "id": "c-1",
                                       "appliesToCombinations": [], "allowedAAGUIDs": [ANDROID, IOS]}]}], [],
        "appliesToCombinations"),
    "new CA policy": (_ca(), legacy_fido2(), GOOD, [], "displayName"),
    "CA display name case": (_ca(), legacy_fido2(), GOOD,
                             [{**CA_OK, "displayName": "require authenticator passkey"}], "displayName"),
    "CA state": (_ca(state="enabled"), legacy_fido2(), GOOD, [CA_OK], "state"),
    "CA include users": (_ca(), legacy_fido2(), GOOD, [ca_policy(include_users=["All"], include_groups=[GROUP_A])],
                         "conditions.users.includeUsers"),
    "CA include groups": (_ca(), legacy_fido2(), GOOD, [ca_policy(include_users=[], include_groups=[GROUP_B])],
                          "conditions.users.includeGroups"),
    "CA exclude users": (_ca(), legacy_fido2(), GOOD,
                         [ca_policy(include_users=[], include_groups=[GROUP_A], exclude_users=[])],
                         "conditions.users.excludeUsers"),
    "CA exclude groups": (_ca(), legacy_fido2(), GOOD,
                          [ca_policy(include_users=[], include_groups=[GROUP_A], exclude_groups=[GROUP_B])],
                          "conditions.users.excludeGroups"),
    "CA applications": (_ca(), legacy_fido2(), GOOD,
                        [ca_policy(include_users=[], include_groups=[GROUP_A], apps=["All"])],
                        "conditions.applications.includeApplications"),
    "CA strength": (_ca(), legacy_fido2(), GOOD,
                    [ca_policy(include_users=[], include_groups=[GROUP_A], strength_id="other")],
                    "grantControls.authenticationStrength.id"),
    "CA built-in controls": (_ca(), legacy_fido2(), GOOD,
                             [ca_policy(include_users=[], include_groups=[GROUP_A], built_in=["mfa"])],
                             "grantControls.builtInControls"),
    "CA operator": (_ca(), legacy_fido2(), GOOD,
                    [{**CA_OK, "grantControls": {**CA_OK["grantControls"], "operator": "AND"}}],
                    "grantControls.operator"),
}


def _verify(state: DesiredState, fido2: dict[str, Any], strengths: list[Any], cas: list[Any]) -> Any:
    return run_checks(build_check_context(state, fido2, strengths, cas, [ANDROID, IOS]))


def _fields(plan: Plan) -> list[str]:
    return [row.field for row in plan.changes]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_every_change_kind_fails_a_check(name: str) -> None:
    """For each kind of change the plan can contain, verify on the same state fails a check naming it."""
    state, fido2, strengths, cas, field = SCENARIOS[name]
    plan = plan_of(state, fido2, strengths, cas)
    assert any(field in f for f in _fields(plan)), (name, _fields(plan))
    report = _verify(state, fido2, strengths, cas)
    assert not report.passed, name
    doc_check = next(r for r in report.results if r.id == "PG-DOC-001")
    assert doc_check.status == "failed" and field in doc_check.reason, (name, doc_check.reason)


def test_the_scenarios_cover_every_change_the_plan_source_can_make() -> None:
    """Each field name the plan's source passes to `change(...)` is produced by at least one scenario above,
    so a new kind of change cannot arrive without a test that verify catches it."""
    produced = {f for state, fido2, strengths, cas, _ in SCENARIOS.values()
                for f in _fields(plan_of(state, fido2, strengths, cas))}
    literals = re.findall(r'self\.change\(AREA_\w+,\s*f?"([^"]+)"', PLAN_SOURCE.read_text())
    assert len(literals) >= 15
    for literal in literals:
        pattern = re.compile("^" + re.sub(r"\\\{[^}]*\\\}", ".+", re.escape(literal)) + "$")
        assert any(pattern.match(f) for f in produced), f"no scenario makes the plan change {literal!r}"


def test_a_compliant_tenant_has_an_empty_plan_and_passes() -> None:
    """The reverse: a tenant exactly as the document says plans nothing and verifies."""
    state, cas = _ca(), [CA_OK, ca_policy("ca-2", "Someone else's", include_users=["All"], exclude_users=[BREAK_GLASS],
                                          apps=[APP])]
    assert plan_of(state, legacy_fido2(), GOOD, cas).changes == []
    assert _verify(state, legacy_fido2(), GOOD, cas).passed


@SETTINGS
@given(documents(), raw_fido2(), raw_strengths(), raw_cas())
def test_verify_fails_whenever_the_plan_changes_something(doc: dict[str, Any], fido2: dict[str, Any],
                                                         strengths: list[dict[str, Any]],
                                                         cas: list[dict[str, Any]]) -> None:
    """Random tenants and documents: a plan with a change always comes with a failed verify, and the drift
    check names exactly the plan's fields."""
    from shared.policy.document import validate_document

    state = validate_document(doc)
    plan = plan_of(state, fido2, strengths, cas)
    report = _verify(state, fido2, strengths, cas)
    if plan.changes:
        assert not report.passed
        doc_check = next(r for r in report.results if r.id == "PG-DOC-001")
        if doc_check.status == "failed" and "field(s) differ" in doc_check.reason:
            assert doc_check.reason.startswith(f"{len(plan.changes)} field(s)")
