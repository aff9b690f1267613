"""The rollback use case: it undoes an apply run and only an apply run."""
from __future__ import annotations

import pytest

from shared.errors import InputError
from shared.policy.apply import apply_document
from shared.policy.planning import plan
from shared.policy.rollback import rollback
from tests.e2e.stack import YUBI, tenant, user

PROFILE_ID = "00000000-0000-0000-0000-000000000001"


def profiles_tenant(legacy_patch: str) -> dict:
    """Three key holders in a tenant migrated to passkey profiles, nothing enforced yet; how the simulator
    answers a PATCH of the legacy top-level fields there is the knob Graph leaves unpublished."""
    doc = tenant([user(1), user(2), user(3)])
    fido2 = doc["authenticationMethodConfigurations"]["fido2"]
    fido2["defaultPasskeyProfile"] = PROFILE_ID
    fido2["passkeyProfiles"] = [{"id": PROFILE_ID, "name": "Default passkey profile", "passkeyTypes": "deviceBound",
                                 "attestationEnforcement": "disabled",
                                 "keyRestrictions": {"isEnforced": True, "enforcementType": "allow",
                                                     "aaGuids": [YUBI]}}]
    fido2["includeTargets"][0]["allowedPasskeyProfiles"] = [PROFILE_ID]
    doc["simulator"]["legacy_patch_in_profiles_tenant"] = legacy_patch
    return doc


async def test_an_apply_is_rolled_back_and_a_second_rollback_writes_nothing(use_case_stack):
    """Rolling back an apply restores the tenant; rolling it back again is a no-op."""
    services, sim = await use_case_stack()
    before = sim.state(users=False)["authenticationMethodConfigurations"]["fido2"]["keyRestrictions"]
    applied = await apply_document(services, trigger="test")
    undone = await rollback(services, applied["runId"], accept_lockout=False, trigger="test")
    assert undone["result"] == "rolled-back" and undone["rolledBack"] == applied["runId"]
    assert sim.state(users=False)["authenticationMethodConfigurations"]["fido2"]["keyRestrictions"] == before
    writes = sim.stats()["writes"]
    again = await rollback(services, applied["runId"], accept_lockout=False, trigger="test")
    assert again["result"] == "no-op" and sim.stats()["writes"] == writes


async def test_a_plan_run_is_not_something_to_roll_back(use_case_stack):
    """Naming a plan run is an InputError that points to the runs listing."""
    services, _ = await use_case_stack()
    planned = await plan(services, trigger="test")
    with pytest.raises(InputError, match="plan run"):
        await rollback(services, planned["runId"], accept_lockout=False, trigger="test")


@pytest.mark.parametrize("legacy_patch", ["reject", "ignore"])
async def test_a_profiles_tenant_is_rolled_back_through_its_profiles_alone(use_case_stack, legacy_patch):
    """In a tenant with passkey profiles the legacy top-level fields only mirror the default profile, and what
    Graph does with a PATCH of them there is unpublished (refused, or silently ignored): the rollback restores
    the profiles and never sends the mirror, so it works under either reading."""
    services, sim = await use_case_stack(profiles_tenant(legacy_patch))

    def profiles() -> list:
        return sim.state(users=False)["authenticationMethodConfigurations"]["fido2"]["passkeyProfiles"]

    before = profiles()
    applied = await apply_document(services, trigger="test")
    assert profiles() != before
    undone = await rollback(services, applied["runId"], accept_lockout=True, trigger="test")
    assert undone["result"] == "rolled-back", undone
    assert profiles() == before
