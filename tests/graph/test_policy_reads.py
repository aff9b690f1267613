"""Reads of the tenant's policy state against the Graph simulator: raw JSON, configurations, names, users."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from graphsim.launcher import Simulator, start_simulator
from shared.graph.policy_reads import (
    read_ca_policies_raw,
    read_directory_names,
    read_fido2_raw,
    read_groups,
    read_strengths_raw,
    read_users_with_passkeys,
)
from tests.e2e.stack import YUBI, tenant, uid, user

GROUP = "0a0a0a0a-1111-4222-8333-444444444444"
MISSING = "0b0b0b0b-1111-4222-8333-444444444444"
APP_ID = "0c0c0c0c-1111-4222-8333-444444444444"
CONFIG = {"@odata.type": "#microsoft.graph.fido2CombinationConfiguration", "id": "cfg-1",
          "appliesToCombinations": ["fido2"], "allowedAAGUIDs": [YUBI]}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    doc = tenant([user(1), user(2), user(3, key=None)],
                 groups=[{"id": GROUP, "displayName": "Passkey Pilot", "securityEnabled": True, "mailEnabled": False,
                          "groupTypes": []}],
                 servicePrincipals=[{"id": "0d0d0d0d-1111-4222-8333-444444444444", "appId": APP_ID,
                                     "displayName": "Payroll"}],
                 authenticationStrengthPolicies=[
                     {"id": "s-ours", "displayName": "Ours", "policyType": "custom", "allowedCombinations": ["fido2"],
                      "combinationConfigurations": [CONFIG]},
                     {"id": "s-other", "displayName": "Other", "policyType": "custom",
                      "allowedCombinations": ["fido2"], "combinationConfigurations": [dict(CONFIG, id="cfg-2")]}],
                 conditionalAccessPolicies=[{"id": "ca-1", "displayName": "Require passkey", "state": "disabled"}])
    with start_simulator(doc) as running:
        yield running


async def test_the_fido2_configuration_is_raw_json_without_response_annotations(graph):
    """The FIDO2 configuration comes as Graph sent it, minus `@odata.context`: nothing to send back by mistake."""
    fido2 = await read_fido2_raw(graph)
    assert fido2["@odata.type"] == "#microsoft.graph.fido2AuthenticationMethodConfiguration"
    assert fido2["keyRestrictions"]["aaGuids"] == [YUBI] and "@odata.context" not in fido2


async def test_only_the_named_strength_gets_its_configurations_from_their_own_collection(graph, sim):
    """The strength named like ours gets its combination configurations read; the others keep the list's."""
    sim.reset_stats()
    strengths = {s["id"]: s for s in await read_strengths_raw(graph, with_configurations_for="Ours")}
    assert [c["id"] for c in strengths["s-ours"]["combinationConfigurations"]] == ["cfg-1"]
    assert all("@odata.context" not in c for c in strengths["s-ours"]["combinationConfigurations"])
    routes = sim.stats()["calls"]["by_route"]
    assert sum(n for route, n in routes.items() if "combinationConfigurations" in route) == 1, routes


async def test_conditional_access_policies_are_listed(graph):
    """Every CA policy of the tenant, raw."""
    assert [p["displayName"] for p in await read_ca_policies_raw(graph)] == ["Require passkey"]


async def test_a_missing_group_reads_as_none(graph):
    """A target group Graph does not know is None, so the plan can name it as an error; the known one is read."""
    groups = await read_groups(graph, [GROUP, MISSING, GROUP])
    assert groups[GROUP] is not None and groups[GROUP]["securityEnabled"] is True
    assert groups[MISSING] is None and len(groups) == 2


async def test_names_of_users_applications_and_groups(graph):
    """Names for people: a user, an application by appId and a group; an unknown id reads as None."""
    names = await read_directory_names(graph, users=[uid(1), MISSING], applications=[APP_ID], groups=[GROUP])
    assert names[uid(1)]["displayName"] == "User 1" and names[MISSING] is None
    assert names[APP_ID]["displayName"] == "Payroll" and names[GROUP]["displayName"] == "Passkey Pilot"


async def test_users_with_passkeys_leave_out_users_without_one(graph):
    """Every user's UPN is listed; only users with a registered passkey appear in the passkeys map."""
    passkeys, upns = await read_users_with_passkeys(graph)
    assert set(upns) == {uid(1), uid(2), uid(3)} and upns[uid(1)] == "user1@contoso.example"
    assert set(passkeys) == {uid(1), uid(2)} and passkeys[uid(1)][0]["aaGuid"] == YUBI
