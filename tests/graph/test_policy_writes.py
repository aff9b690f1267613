"""Planned writes sent to the Graph simulator: typed strength writes, raw FIDO2 and CA JSON, and CA pacing."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from graphsim.launcher import Simulator, start_simulator
from shared.graph.gateway import GraphGateway
from shared.graph.policy_reads import read_ca_policies_raw, read_fido2_raw, read_strengths_raw
from shared.graph.policy_writes import CA_MIN_INTERVAL, CaPacer, send_write
from shared.policy.plan import fill_strength_id
from shared.policy.plan_model import STRENGTH_ID_PLACEHOLDER
from tests.e2e.stack import YUBI, tenant, user

ANDROID = "de1e552d-db1d-4423-a619-566b625cdc84"
PROFILE_ID = "00000000-0000-0000-0000-000000000001"
COMBO = "#microsoft.graph.fido2CombinationConfiguration"


class FakeClock:
    """A monotonic clock that moves only when the pacer sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    doc = tenant([user(1)])
    fido2 = doc["authenticationMethodConfigurations"]["fido2"]
    fido2["defaultPasskeyProfile"] = PROFILE_ID
    fido2["passkeyProfiles"] = [{"id": PROFILE_ID, "name": "Default passkey profile",
                                 "passkeyTypes": "deviceBound,synced", "attestationEnforcement": "registrationOnly",
                                 "keyRestrictions": {"isEnforced": True, "enforcementType": "allow",
                                                     "aaGuids": [YUBI]}}]
    with start_simulator(doc) as running:
        yield running


async def strength_named(graph: GraphGateway, name: str) -> dict[str, Any] | None:
    return next((s for s in await read_strengths_raw(graph, with_configurations_for=name)
                 if s.get("displayName") == name), None)


async def test_a_new_strength_and_its_restriction_are_written_through_the_typed_models(graph):
    """create_strength returns the new id; the placeholder filled, the configuration lands on that strength."""
    pacer = CaPacer()
    body = {"displayName": "Typed strength", "description": "Managed", "allowedCombinations": ["fido2"]}
    new_id = await send_write(graph, {"op": "create_strength", "target": "Typed strength", "body": body}, pacer)
    assert new_id
    (config,) = fill_strength_id([{"op": "create_combination_configuration", "target": "Typed strength",
                                   "strengthId": STRENGTH_ID_PLACEHOLDER,
                                   "body": {"@odata.type": COMBO, "appliesToCombinations": ["fido2"],
                                            "allowedAAGUIDs": [YUBI]}}], new_id)
    assert await send_write(graph, config, pacer) is None
    created = await strength_named(graph, "Typed strength")
    assert created is not None and created["id"] == new_id and created["description"] == "Managed"
    (stored,) = created["combinationConfigurations"]
    await send_write(graph, {"op": "update_combination_configuration", "target": "Typed strength",
                             "strengthId": new_id, "configurationId": stored["id"],
                             "body": {"@odata.type": COMBO, "allowedAAGUIDs": [YUBI, ANDROID]}}, pacer)
    updated = await strength_named(graph, "Typed strength")
    assert updated is not None and updated["combinationConfigurations"][0]["allowedAAGUIDs"] == [YUBI, ANDROID]


async def test_multi_method_combinations_are_restored_as_raw_json(graph):
    """A rollback's "password,sms" combination survives (the SDK's enum would lose it: pitfall 3)."""
    pacer = CaPacer()
    new_id = await send_write(graph, {"op": "create_strength", "target": "Combos", "body": {
        "displayName": "Combos", "allowedCombinations": ["fido2"]}}, pacer)
    assert new_id
    await send_write(graph, {"op": "update_strength_combinations", "target": "Combos", "strengthId": new_id,
                             "body": {"allowedCombinations": ["password,sms", "fido2"]}}, pacer)
    combos = await strength_named(graph, "Combos")
    assert combos is not None and sorted(combos["allowedCombinations"]) == ["fido2", "password,sms"]
    await send_write(graph, {"op": "delete_strength", "target": "Combos", "strengthId": new_id, "body": {}}, pacer)
    assert await strength_named(graph, "Combos") is None


async def test_the_fido2_patch_keeps_a_multi_value_passkey_type(graph):
    """The FIDO2 PATCH is the plan's JSON: a profile's "deviceBound,synced" is written as sent."""
    fido2 = await read_fido2_raw(graph)
    profiles = [dict(p, keyRestrictions={**p["keyRestrictions"], "aaGuids": [YUBI, ANDROID]})
                for p in fido2["passkeyProfiles"]]
    await send_write(graph, {"op": "patch_fido2", "target": "fido2", "body": {
        "@odata.type": fido2["@odata.type"], "passkeyProfiles": profiles}}, CaPacer())
    (profile,) = (await read_fido2_raw(graph))["passkeyProfiles"]
    assert profile["passkeyTypes"] == "deviceBound,synced" and profile["keyRestrictions"]["aaGuids"] == [YUBI, ANDROID]


async def test_ca_writes_create_update_and_delete_a_policy(graph):
    """A CA policy is created (its id returned), updated and deleted through the plan's raw JSON."""
    clock = FakeClock()
    pacer = CaPacer(clock=clock, sleep=clock.sleep)
    body = {"displayName": "Paced policy", "state": "disabled",
            "conditions": {"clientAppTypes": ["all"], "applications": {"includeApplications": ["All"]},
                           "users": {"includeUsers": ["All"]}},
            "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}}
    policy_id = await send_write(graph, {"op": "create_ca_policy", "target": "Paced policy", "body": body}, pacer)
    assert policy_id
    await send_write(graph, {"op": "update_ca_policy", "target": "Paced policy", "policyId": policy_id,
                             "body": {"state": "enabledForReportingButNotEnforced"}}, pacer)
    (policy,) = [p for p in await read_ca_policies_raw(graph) if p["id"] == policy_id]
    assert policy["state"] == "enabledForReportingButNotEnforced"
    await send_write(graph, {"op": "delete_ca_policy", "target": "Paced policy", "policyId": policy_id,
                             "body": {}}, pacer)
    assert all(p["id"] != policy_id for p in await read_ca_policies_raw(graph))
    assert clock.slept == [pytest.approx(CA_MIN_INTERVAL)] * 2  # the second and third CA calls waited their turn


async def test_the_ca_pacer_spaces_turns_by_the_minimum_interval():
    """The first turn goes at once; the next waits what is left of CA_MIN_INTERVAL, and none after a long gap."""
    clock = FakeClock()
    pacer = CaPacer(clock=clock, sleep=clock.sleep)
    await pacer.turn()
    clock.now += 0.25
    await pacer.turn()
    clock.now += CA_MIN_INTERVAL + 5
    await pacer.turn()
    assert clock.slept == [pytest.approx(CA_MIN_INTERVAL - 0.25)]


async def test_an_unknown_write_is_refused_before_any_request(graph, sim):
    """A write nobody plans is a programming error: nothing is sent."""
    sim.reset_stats()
    with pytest.raises(ValueError, match="delete_everything"):
        await send_write(graph, {"op": "delete_everything", "target": "x", "strengthId": "s", "body": {}}, CaPacer())
    assert sim.stats()["writes"] == 0


async def test_graph_refuses_a_fido2_patch_without_the_write_role_and_the_adapter_says_so(sim):
    """Without Policy.ReadWrite.AuthenticationMethod the PATCH itself is Graph's 403, which the adapter raises as
    a GraphError carrying Authorization_RequestDenied; the policy is unchanged (the second guard behind the app's
    own check, which send_write does not run)."""
    from devhost.graph_tokens import app_token, granted_roles
    from shared.config import Settings
    from shared.errors import GraphError

    tenant_id = sim.state(users=False)["tenantId"]
    audit = app_token(tenant_id, granted_roles("always", "audit", "keepStalePasskeys"))
    settings = Settings.from_env({"TENANT_ID": tenant_id, "STATE_STORAGE": "x", "GRAPH_BASE_URL": sim.base_url,
                                  "GRAPH_DEV_TOKEN": audit})
    gateway = GraphGateway(settings)
    try:
        before = await read_fido2_raw(gateway)
        write = {"op": "patch_fido2", "target": "fido2", "body": {
            "@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration",
            "isSelfServiceRegistrationAllowed": False}}
        with pytest.raises(GraphError) as caught:
            await send_write(gateway, write, CaPacer())
        assert caught.value.status_code == 403 and caught.value.graph_code == "Authorization_RequestDenied"
        assert "Insufficient privileges" in caught.value.message
        assert await read_fido2_raw(gateway) == before
    finally:
        await gateway.close()
