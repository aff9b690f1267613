"""Rollback end to end: a run that created the strength and the CA policy is undone whole, against the
simulator and Azurite; what changed since the run is kept and named; the CLI prints what it changed."""
from __future__ import annotations

import copy
import json

import httpx
import pytest

from shared.errors import LockoutRefused
from shared.policy.apply import apply_document
from shared.policy.rollback import rollback
from tests.e2e.stack import ANDROID, admin_edits_ca_policy, running_stack, uid
from tests.e2e.test_cli import cli, cli_env
from tests.e2e.test_policy_e2e import BREAK_GLASS, PILOT, doc_with, fido2_of, legacy_tenant

STRENGTH = "Authenticator passkey"
CA_NAME = "Require Authenticator passkey"


def ca_doc() -> dict:
    return doc_with(conditionalAccess={"displayName": CA_NAME, "includeGroups": [PILOT],
                                       "excludeGroups": [BREAK_GLASS], "includeApplications": ["All"]})


def mine(stack) -> tuple[list[dict], list[dict]]:
    """Our strengths and CA policies in the simulator, by name."""
    state = stack.sim.state(users=False)
    return ([s for s in state["authenticationStrengthPolicies"] if s["displayName"] == STRENGTH],
            [p for p in state["conditionalAccessPolicies"] if p["displayName"] == CA_NAME])


async def test_rollback_deletes_the_strength_and_ca_policy_the_run_created(azurite):
    """Apply creates the strength and the CA policy; rollback deletes both, restores FIDO2, shows a table of
    what it changed; a second rollback of the same run is a no-op that writes nothing."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        before = fido2_of(stack)
        applied = await apply_document(stack.services, trigger="test", document=ca_doc())
        assert applied["result"] == "applied" and all(mine(stack))
        done = await rollback(stack.services, applied["runId"], accept_lockout=True, trigger="test")
        assert done["result"] == "rolled-back", done
        assert mine(stack) == ([], [])
        assert fido2_of(stack)["keyRestrictions"] == before["keyRestrictions"]
        areas = {(row["area"], row["object"]) for row in done["changed"]}
        assert {("conditionalAccess", CA_NAME), ("authenticationStrength", STRENGTH)} <= areas
        assert any(row["area"] == "passkeyMethod" for row in done["changed"])
        assert done["kept"] == []
        assert "(deleted)" in done["table"] and CA_NAME in done["table"] and STRENGTH in done["table"]
        writes = stack.sim.stats()["writes"]
        again = await rollback(stack.services, applied["runId"], accept_lockout=True, trigger="test")
        assert again["result"] == "no-op" and again["changed"] == [] and again["kept"] == []
        assert stack.sim.stats()["writes"] == writes


async def test_a_ca_policy_changed_since_the_run_is_kept_and_named(azurite):
    """An administrator edits the CA policy after the run: the rollback leaves it (and the strength it still
    references) as they are, says why, and still restores the passkey method."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        before = fido2_of(stack)
        applied = await apply_document(stack.services, trigger="test", document=ca_doc())
        (_, (ca,)) = mine(stack)
        conditions = copy.deepcopy(ca["conditions"])
        conditions["users"]["includeUsers"] = ["All"]
        await admin_edits_ca_policy(stack.sim, ca["id"], {"conditions": conditions})
        done = await rollback(stack.services, applied["runId"], accept_lockout=True, trigger="test")
        assert done["result"] == "partly-rolled-back", done
        strengths, policies = mine(stack)
        assert len(strengths) == 1 and len(policies) == 1
        assert policies[0]["conditions"]["users"]["includeUsers"] == ["All"]  # not overwritten
        kept = {row["object"]: row["reason"] for row in done["kept"]}
        assert "changed since" in kept[CA_NAME] and "includeUsers" in kept[CA_NAME]
        assert CA_NAME in kept[STRENGTH]
        assert fido2_of(stack)["keyRestrictions"] == before["keyRestrictions"]
        assert "KEPT" in done["table"] and CA_NAME in done["table"]


async def test_the_lockout_refusal_names_the_rollback_command(azurite):
    """A rollback that drops an AAGUID someone registered with is refused, naming `python -m shared rollback
    RUN_ID --accept-lockout` (not apply's flags), and writes nothing."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        applied = await apply_document(stack.services, trigger="test", document=ca_doc())
        stack.sim.register_passkey(uid(4), aaGuid=ANDROID, displayName="Authenticator",
                                   model="Microsoft Authenticator")
        writes = stack.sim.stats()["writes"]
        with pytest.raises(LockoutRefused) as refused:
            await rollback(stack.services, applied["runId"], accept_lockout=False, trigger="test")
        message = refused.value.message
        assert f"python -m shared rollback {applied['runId']} --accept-lockout" in message
        assert "acceptLockout" not in message and "Apply again" not in message
        assert stack.sim.stats()["writes"] == writes and all(mine(stack))


async def test_the_cli_prints_what_the_rollback_changed(azurite):
    """`python -m shared rollback RUN_ID --accept-lockout` prints the table of what it changed and exits 0;
    a rollback that had to keep a changed object exits 1."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        applied = await apply_document(stack.services, trigger="test", document=ca_doc())
        env = cli_env(stack, azurite.connection_string)
        done = await cli(env, "rollback", applied["runId"], "--accept-lockout")
        assert done.returncode == 0, done.stderr
        assert "AREA" in done.stdout and "OBJECT" in done.stdout and "(deleted)" in done.stdout
        assert CA_NAME in done.stdout and STRENGTH in done.stdout
        again = await apply_document(stack.services, trigger="test", document=ca_doc())
        strengths, _ = mine(stack)
        async with httpx.AsyncClient(base_url=stack.sim.base_url, headers={"Authorization": "Bearer dev"}) as graph:
            answer = await graph.patch(f"/policies/authenticationStrengthPolicies/{strengths[0]['id']}",
                                       json={"description": "edited by an administrator"})
            assert answer.status_code == 204, answer.text
        partial = await cli(env, "rollback", again["runId"], "--accept-lockout", "--json")
        assert partial.returncode == 1, partial.stderr
        body = json.loads(partial.stdout)
        assert {row["object"] for row in body["kept"]} >= {STRENGTH}


async def test_only_an_apply_run_can_be_rolled_back(azurite):
    """Rolling back a plan run (which wrote nothing) is bad input naming the kind, and writes nothing."""
    from shared.errors import InputError
    from shared.policy.planning import plan

    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        planned = await plan(stack.services, trigger="test", document=ca_doc())
        with pytest.raises(InputError) as refused:
            await rollback(stack.services, planned["runId"], accept_lockout=True, trigger="test")
        assert "plan run" in refused.value.message and stack.sim.stats()["writes"] == 0
