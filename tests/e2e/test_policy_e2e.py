"""Policy as code end to end: plan, apply, read back and verify against the simulator and Azurite."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from shared.errors import InputError, LockoutRefused
from shared.policy.apply import apply_document
from shared.policy.planning import plan
from shared.policy.rollback import rollback
from shared.policy.scheduled import scheduled_run
from shared.policy.verify import verify
from tests.e2e.stack import ANDROID, IOS, YUBI, admin_edits_ca_policy, running_stack, tenant, uid, user

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DOC = json.loads((ROOT / "policy" / "desired-state.json").read_text())
PILOT = "99999999-0000-4000-8000-000000000001"
MARKETING = "99999999-0000-4000-8000-000000000002"
BREAK_GLASS = "99999999-0000-4000-8000-000000000003"
PROFILE_ID = "00000000-0000-0000-0000-000000000001"
GROUPS = [
    {"id": PILOT, "displayName": "Passkey Pilot", "securityEnabled": True, "mailEnabled": False, "groupTypes": []},
    {"id": MARKETING, "displayName": "Marketing", "securityEnabled": False, "mailEnabled": True,
     "groupTypes": ["Unified"]},
    {"id": BREAK_GLASS, "displayName": "Break Glass", "securityEnabled": True, "mailEnabled": False,
     "groupTypes": []},
]


def legacy_tenant() -> dict:
    doc = tenant([user(1), user(2), user(3), user(4, key=None)], groups=GROUPS)
    doc["authenticationMethodConfigurations"]["fido2"]["isAttestationEnforced"] = True
    return doc


def profiles_tenant() -> dict:
    doc = legacy_tenant()
    fido2 = doc["authenticationMethodConfigurations"]["fido2"]
    fido2["defaultPasskeyProfile"] = PROFILE_ID
    fido2["passkeyProfiles"] = [{"id": PROFILE_ID, "name": "Default passkey profile",
                                 "passkeyTypes": "deviceBound,synced", "attestationEnforcement": "registrationOnly",
                                 "keyRestrictions": {"isEnforced": True, "enforcementType": "allow",
                                                     "aaGuids": [YUBI]}}]
    fido2["includeTargets"][0]["allowedPasskeyProfiles"] = [PROFILE_ID]
    return doc


def doc_with(**changes) -> dict:
    doc = copy.deepcopy(DEFAULT_DOC)
    doc.pop("$schema", None)
    for dotted, value in changes.items():
        node = doc
        *path, last = dotted.split("__")
        for key in path:
            node = node.setdefault(key, {})
        node[last] = value
    return doc


def fido2_of(stack) -> dict:
    return stack.sim.state(users=False)["authenticationMethodConfigurations"]["fido2"]


async def test_legacy_tenant_apply_adds_authenticator_and_keeps_the_old_key(azurite):
    """Legacy tenant: apply adds both Authenticator AAGUIDs, keeps the old one, is read back, and a
    second apply makes no Graph write."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        result = await apply_document(stack.services, trigger="test", document=doc_with())
        assert result["result"] == "applied"
        fido2 = fido2_of(stack)
        assert fido2["keyRestrictions"] == {"isEnforced": True, "enforcementType": "allow",
                                            "aaGuids": [YUBI, ANDROID, IOS]}
        assert fido2["isAttestationEnforced"] is False and fido2["isSelfServiceRegistrationAllowed"] is True
        report = await verify(stack.services, trigger="test", document=doc_with())
        assert report["passed"], report["markdown"]
        writes = stack.sim.stats()["writes"]
        again = await apply_document(stack.services, trigger="test", document=doc_with())
        assert again["result"] == "no-op" and stack.sim.stats()["writes"] == writes


async def test_profiles_tenant_keeps_passkey_types(azurite):
    """Profiles tenant: the default profile gets the AAGUIDs and keeps passkeyTypes "deviceBound,synced"."""
    async with running_stack(azurite, profiles_tenant(), drain=False) as stack:
        result = await apply_document(stack.services, trigger="test", document=doc_with())
        assert result["result"] == "applied" and result["plan"]["mode"] == "profiles"
        profile = fido2_of(stack)["passkeyProfiles"][0]
        assert profile["passkeyTypes"] == "deviceBound,synced"
        assert profile["keyRestrictions"]["aaGuids"] == [YUBI, ANDROID, IOS]
        assert profile["attestationEnforcement"] == "disabled" and profile["name"] == "Default passkey profile"
        writes = stack.sim.stats()["writes"]
        assert (await apply_document(stack.services, trigger="test", document=doc_with()))["result"] == "no-op"
        assert stack.sim.stats()["writes"] == writes


async def test_removing_a_registered_aaguid_names_the_users_and_needs_acceptance(azurite):
    """Removing an AAGUID three users registered: the plan names them; apply refuses without acceptance."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        doc = doc_with(passkeyMethod__keyRestrictions__remove=[YUBI])
        planned = await plan(stack.services, trigger="test", document=doc)
        lockout = planned["plan"]["lockout"]
        assert sorted({row["userId"] for row in lockout}) == [uid(1), uid(2), uid(3)]
        assert planned["requiresAcceptance"]
        writes = stack.sim.stats()["writes"]
        with pytest.raises(LockoutRefused) as refused:
            await apply_document(stack.services, trigger="test", document=doc)
        assert "3 user(s)" in refused.value.message
        assert stack.sim.stats()["writes"] == writes and YUBI in fido2_of(stack)["keyRestrictions"]["aaGuids"]
        accepted = await apply_document(stack.services, trigger="test", document=doc, accept_lockout=True)
        assert accepted["result"] == "applied"
        assert fido2_of(stack)["keyRestrictions"]["aaGuids"] == [ANDROID, IOS]


async def test_a_microsoft_365_group_as_target_is_refused_and_nothing_is_written(azurite):
    """Only security groups may be targets: a Microsoft 365 group gives a clear error and no write."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        doc = doc_with(passkeyMethod__includeTargets=[MARKETING])
        with pytest.raises(InputError) as error:
            await apply_document(stack.services, trigger="test", document=doc)
        assert MARKETING in error.value.message or "Marketing" in error.value.message
        assert stack.sim.stats()["writes"] == 0


async def test_strength_and_conditional_access_are_created_once(azurite):
    """The custom strength and the report-only CA policy are created once; a rerun changes nothing."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        doc = doc_with(conditionalAccess={"displayName": "Require Authenticator passkey",
                                          "includeGroups": [PILOT], "excludeGroups": [BREAK_GLASS],
                                          "includeApplications": ["All"]})
        await apply_document(stack.services, trigger="test", document=doc)
        state = stack.sim.state(users=False)
        mine = [s for s in state["authenticationStrengthPolicies"] if s["displayName"] == "Authenticator passkey"]
        assert len(mine) == 1 and mine[0]["allowedCombinations"] == ["fido2"]
        configs = mine[0].get("combinationConfigurations", [])
        assert [sorted(c["allowedAAGUIDs"]) for c in configs] == [sorted([ANDROID, IOS])]
        (ca,) = state["conditionalAccessPolicies"]
        assert ca["state"] == "enabledForReportingButNotEnforced"
        assert ca["grantControls"]["authenticationStrength"]["id"] == mine[0]["id"]
        assert ca["conditions"]["users"]["excludeGroups"] == [BREAK_GLASS]
        writes = stack.sim.stats()["writes"]
        assert (await apply_document(stack.services, trigger="test", document=doc))["result"] == "no-op"
        assert stack.sim.stats()["writes"] == writes
        report = await verify(stack.services, trigger="test", document=doc)
        assert report["passed"], report["markdown"]


async def test_verify_catches_a_widened_conditional_access_policy(azurite):
    """Issue 11's reproduction: after an apply whose CA policy includes one group, an administrator widens
    the policy to All users through Graph; verify now fails PG-CA-004 and agrees with the plan."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        doc = doc_with(conditionalAccess={"displayName": "Require Authenticator passkey",
                                          "includeGroups": [PILOT], "excludeGroups": [BREAK_GLASS],
                                          "includeApplications": ["All"]})
        await apply_document(stack.services, trigger="test", document=doc)
        assert (await verify(stack.services, trigger="test", document=doc))["passed"]
        (ca,) = stack.sim.state(users=False)["conditionalAccessPolicies"]
        conditions = copy.deepcopy(ca["conditions"])
        conditions["users"].update(includeUsers=["All"], includeGroups=[])
        await admin_edits_ca_policy(stack.sim, ca["id"], {"conditions": conditions})
        report = await verify(stack.services, trigger="test", document=doc)
        assert not report["passed"]
        failed = {c["id"]: c["reason"] for c in report["checks"] if c["status"] == "failed"}
        assert "includeUsers" in failed["PG-CA-004"] and "PG-DOC-001" in failed, failed
        planned = await plan(stack.services, trigger="test", document=doc)
        assert {row["field"] for row in planned["plan"]["changes"]} >= {"conditions.users.includeUsers",
                                                                        "conditions.users.includeGroups"}


async def _plan_over_http(stack) -> str:
    """POST /api/policy/plan (the ad-hoc document is allowed in these stacks), run the job, return the plan id."""
    status, text, _ = await stack.post("policy/plan", json.dumps({"document": doc_with()}))
    assert status == 202, text
    await stack.host.drain_once()
    status, text, _ = await stack.get(f"runs/{json.loads(text)['runId']}")
    return json.loads(text)["planId"]


async def test_applying_a_stale_plan_answers_409(azurite):
    """A stored plan applied after the tenant changed is refused with 409 and writes nothing."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             ALLOW_ADHOC_DOCUMENTS="true") as stack:
        plan_id = await _plan_over_http(stack)
        await stack.services.graph.send_raw("PATCH", "/policies/authenticationMethodsPolicy/"
                                            "authenticationMethodConfigurations/fido2",
                                            {"@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration",
                                             "isSelfServiceRegistrationAllowed": False})
        writes = stack.sim.stats()["writes"]
        status, text, _ = await stack.post("policy/apply", json.dumps({"planId": plan_id}))
        assert status == 409 and json.loads(text)["error"]["code"] == "conflict"
        assert stack.sim.stats()["writes"] == writes


async def test_a_fresh_stored_plan_applies_once_over_http(azurite):
    """POST plan then POST apply {planId}: the job applies; the same plan again is a 409."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             ALLOW_ADHOC_DOCUMENTS="true") as stack:
        plan_id = await _plan_over_http(stack)
        status, text, _ = await stack.post("policy/apply", json.dumps({"planId": plan_id}))
        assert status == 202, text
        await stack.host.drain_once()
        status, text, _ = await stack.get(f"runs/{json.loads(text)['runId']}")
        assert status == 200 and json.loads(text)["result"] == "applied", text
        status, text, _ = await stack.post("policy/apply", json.dumps({"planId": plan_id}))
        assert status == 409
        status, text, _ = await stack.post("policy/apply", json.dumps({"planId": "nope"}))
        assert status == 404 and json.loads(text)["error"]["code"] == "notFound"
        status, text, _ = await stack.post("policy/apply", b"{not json")
        assert status == 400 and "JSON" in json.loads(text)["error"]["message"]


async def test_verify_over_http_reports_json_and_markdown(azurite):
    """POST /api/policy/verify returns the checks with stable ids and a Markdown report."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        status, text, _ = await stack.post("policy/verify", json.dumps({}))
        assert status == 200, text
        report = json.loads(text)
        assert report["passed"] is False
        ids = {c["id"]: c["status"] for c in report["checks"]}
        assert ids["PG-FIDO2-004"] == "failed"  # attestation is enforced in this tenant
        assert "| PG-FIDO2-004 |" in report["markdown"] or "PG-FIDO2-004" in report["markdown"]
        status, text, _ = await stack.get("runs")
        runs = json.loads(text)["value"]
        assert status == 200 and runs[0]["kind"] == "verify" and runs[0]["trigger"] == "http"


async def test_an_aaguid_that_vanishes_after_a_run_fails_verification(azurite):
    """A key allowed at the last run that disappears is caught by the next verification."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        await apply_document(stack.services, trigger="test", document=doc_with())
        await stack.services.graph.send_raw(
            "PATCH", "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2",
            {"@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration",
             "keyRestrictions": {"isEnforced": True, "enforcementType": "allow", "aaGuids": [ANDROID, IOS]}})
        report = await verify(stack.services, trigger="test", document=doc_with())
        vanished = next(c for c in report["checks"] if c["id"] == "PG-FIDO2-007")
        assert vanished["status"] == "failed" and YUBI in vanished["reason"]


async def test_rollback_restores_the_before_snapshot(azurite):
    """rollback RUN_ID puts the passkey policy back, and asks for acceptance since it narrows."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        before = fido2_of(stack)
        applied = await apply_document(stack.services, trigger="test", document=doc_with())
        stack.sim.register_passkey(uid(4), aaGuid=ANDROID, displayName="Authenticator",
                                   model="Microsoft Authenticator")  # registered under the new policy
        with pytest.raises(LockoutRefused) as refused:
            await rollback(stack.services, applied["runId"], accept_lockout=False, trigger="test")
        assert [row["userId"] for row in refused.value.detail["lockout"]] == [uid(4)]
        done = await rollback(stack.services, applied["runId"], accept_lockout=True, trigger="test")
        assert done["result"] == "rolled-back"
        after = fido2_of(stack)
        assert after["keyRestrictions"] == before["keyRestrictions"]
        assert after["isAttestationEnforced"] is True


async def test_the_timer_verifies_in_audit_and_applies_in_enforce_mode(azurite, functions):
    """policy_enforcement: audit mode only verifies; enforce mode applies when nothing is at risk."""
    from azure.functions.timer import TimerRequest

    async with running_stack(azurite, legacy_tenant(), drain=False,
                             POLICY_FILE=str(ROOT / "policy" / "desired-state.json")) as stack:
        await functions["policy_enforcement"].get_user_function()(TimerRequest(past_due=False))
        assert stack.sim.stats()["writes"] == 0
        runs, _ = await stack.services.store.runs.page()
        assert runs[0]["kind"] == "verify" and runs[0]["trigger"] == "timer"
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             POLICY_FILE=str(ROOT / "policy" / "desired-state.json")) as stack:
        result = await scheduled_run(stack.services)
        assert result["result"] == "applied"
        assert ANDROID in fido2_of(stack)["keyRestrictions"]["aaGuids"]
