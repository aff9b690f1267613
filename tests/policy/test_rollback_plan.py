"""The rollback plan (pure): restores updated strengths and CA policies field by field, keeps what changed
since the run or is still referenced, and asks for acceptance where an apply would."""
from __future__ import annotations

import copy

from shared.graph.permissions import required_roles
from shared.policy.render import render_rollback_table
from shared.policy.rollback_plan import build_rollback

A1, A2, A3 = ("de1e552d-db1d-4423-a619-566b625cdc84", "90a3ccdf-635c-4729-a248-9b709135078f",
              "cb69481e-8ff7-4039-93ec-0a2729a154a8")
SID, CID, PID, OTHER = "s-1", "c-1", "p-1", "p-2"


def strength(name: str = "Authenticator passkey", description: str = "old", combos: list[str] | None = None,
             aaguids: list[str] | None = None) -> dict:
    configs = [] if aaguids is None else [{"@odata.type": "#microsoft.graph.fido2CombinationConfiguration",
                                           "id": CID, "appliesToCombinations": ["fido2"], "allowedAAGUIDs": aaguids}]
    return {"id": SID, "displayName": name, "description": description, "policyType": "custom",
            "allowedCombinations": combos or ["fido2"], "combinationConfigurations": configs}


def policy(pid: str = PID, name: str = "Require passkey", state: str = "enabledForReportingButNotEnforced",
           strength_id: str | None = SID, groups: list[str] | None = None) -> dict:
    grant = ({"operator": "OR", "authenticationStrength": {"id": strength_id}} if strength_id
             else {"operator": "OR", "builtInControls": ["mfa"]})
    return {"id": pid, "displayName": name, "state": state,
            "conditions": {"clientAppTypes": ["all"], "applications": {"includeApplications": ["All"]},
                           "users": {"includeGroups": groups or ["g-1"]}},
            "grantControls": grant}


def run(before_s: list, after_s: list, before_ca: list, after_ca: list, ops: list[tuple[str, str]]) -> dict:
    fido2 = {"state": "enabled", "keyRestrictions": {"isEnforced": False}}
    return {"kind": "apply",
            "before": {"fido2": fido2, "strengths": before_s, "conditionalAccess": before_ca},
            "after": {"fido2": fido2, "strengths": after_s, "conditionalAccess": after_ca},
            "plan": {"writes": [{"op": op, "target": target, "path": "/x"} for op, target in ops]}}


def test_an_updated_strength_gets_its_before_fields_back():
    """Description, combinations and the FIDO2 AAGUIDs the run changed are restored; dropping an AAGUID is
    narrowing that needs the lockout evaluation, as in an apply."""
    then = strength(description="old", combos=["fido2", "windowsHelloForBusiness"], aaguids=[A3])
    left = strength(description="new", combos=["fido2"], aaguids=[A1, A2, A3])
    rec = run([then], [left], [], [], [("update_strength", "Authenticator passkey")])
    made = build_rollback(rec, rec["after"]["fido2"], [copy.deepcopy(left)], [])
    ops = [w["op"] for w in made.plan.writes]
    assert ops == ["update_strength", "update_combination_configuration", "update_strength_combinations"]
    assert made.plan.writes[0]["body"] == {"description": "old"}
    assert sorted(made.plan.writes[1]["body"]["allowedAAGUIDs"]) == [A3]
    assert made.plan.writes[2]["body"] == {"allowedCombinations": ["fido2", "windowsHelloForBusiness"]}
    assert made.plan.needs_lockout_evaluation and made.plan.requires_acceptance
    assert made.kept == []
    required_roles(made.plan.writes)  # every write kind has a known permission


def test_a_strength_referenced_by_another_ca_policy_is_kept():
    """A strength the run created, now also used by a policy someone else made, is not deleted; the reason
    names that policy."""
    rec = run([], [strength(aaguids=[A1])], [], [policy()], [("create_strength", "Authenticator passkey"),
                                                             ("create_ca_policy", "Require passkey")])
    made = build_rollback(rec, rec["after"]["fido2"], [strength(aaguids=[A1])],
                          [policy(), policy(pid=OTHER, name="Someone else's")])
    assert [w["op"] for w in made.plan.writes] == ["delete_ca_policy"]
    (kept,) = made.kept
    assert kept.object == "Authenticator passkey" and "Someone else's" in kept.reason
    assert "KEPT" in render_rollback_table(made, "r-1")


def test_an_updated_ca_policy_is_restored_and_enforcing_it_again_needs_acceptance():
    """The run moved an enforced MFA policy to the strength in report-only; the rollback restores its state
    and grant, which enforces it again: acceptance is required, as an apply would ask."""
    then = policy(state="enabled", strength_id=None)
    left = policy(state="enabledForReportingButNotEnforced")
    rec = run([], [], [then], [left], [("update_ca_policy", "Require passkey")])
    made = build_rollback(rec, rec["after"]["fido2"], [], [copy.deepcopy(left)])
    (write,) = made.plan.writes
    assert write["op"] == "update_ca_policy" and write["policyId"] == PID
    assert write["body"] == {"state": "enabled", "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}}
    assert made.plan.requires_acceptance
    assert {(r.object, r.field) for r in made.changed} == {("Require passkey", "state"),
                                                           ("Require passkey", "grantControls")}


def test_objects_already_as_before_need_nothing_and_unrelated_objects_are_ignored():
    """After a rollback the same run plans no write; a policy the run did not write is never touched."""
    rec = run([], [strength(aaguids=[A1])], [], [policy()], [("create_strength", "Authenticator passkey"),
                                                             ("create_ca_policy", "Require passkey")])
    made = build_rollback(rec, rec["after"]["fido2"], [], [policy(pid=OTHER, name="Unrelated", strength_id=None)])
    assert made.plan.writes == [] and made.kept == [] and made.changed == []
