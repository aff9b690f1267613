"""The FIDO2 (passkey) method configuration: typed partial PATCH, whole-collection replacement, checks."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from msgraph import GraphServiceClient
from msgraph.generated.models.fido2_authentication_method_configuration import Fido2AuthenticationMethodConfiguration
from msgraph.generated.models.fido2_key_restrictions import Fido2KeyRestrictions
from msgraph.generated.models.fido2_restriction_enforcement_type import Fido2RestrictionEnforcementType
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.passkey_profile import PasskeyProfile
from msgraph.generated.models.passkey_types import PasskeyTypes

from graphsim.launcher import Simulator
from tests.graphsim.conftest import ANDROID, FIDO2_TYPE, PROFILE_ID, YUBI, base_tenant, no_retry, raw, start

PATH = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"
OTHER_PROFILE = "22222222-0000-4000-8000-000000000002"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A tenant in the passkey-profiles shape."""
    yield from start(base_tenant(3))


@pytest.fixture(autouse=True)
def restore(sim: Simulator) -> Iterator[None]:
    """Put the original configuration back after each test."""
    original = {k: v for k, v in raw(sim, "GET", PATH).body.items() if not k.startswith("@odata.context")}
    yield
    assert raw(sim, "PATCH", PATH, {k: v for k, v in original.items() if k != "id"}).status == 204


def _config(client: GraphServiceClient) -> Any:
    return client.policies.authentication_methods_policy.authentication_method_configurations \
        .by_authentication_method_configuration_id("fido2")


async def test_sdk_get_parses_typed_configuration(client: GraphServiceClient) -> None:
    """GET through the SDK yields a Fido2AuthenticationMethodConfiguration with both shapes' settings."""
    cfg = await _config(client).get(request_configuration=no_retry())
    assert isinstance(cfg, Fido2AuthenticationMethodConfiguration)
    assert cfg.key_restrictions.aa_guids == [YUBI]
    assert cfg.default_passkey_profile == PROFILE_ID
    assert cfg.passkey_profiles[0].name == "Default passkey profile"


@pytest.fixture(scope="module")
def legacy() -> Iterator[Simulator]:
    """A tenant in the legacy shape: no passkey profiles, so the top-level fields are the policy."""
    tenant = base_tenant(3)
    fido2 = tenant["authenticationMethodConfigurations"]["fido2"]
    for name in ("defaultPasskeyProfile", "passkeyProfiles"):
        del fido2[name]
    del fido2["includeTargets"][0]["allowedPasskeyProfiles"]
    yield from start(tenant)


async def test_sdk_patch_replaces_key_restrictions_and_keeps_the_rest(client: GraphServiceClient,
                                                                      legacy: Simulator) -> None:
    """In a legacy tenant, a PATCH with only keyRestrictions replaces that object whole and leaves every
    other field alone."""
    home = client.request_adapter.base_url
    client.request_adapter.base_url = legacy.base_url
    try:
        await _config(client).patch(Fido2AuthenticationMethodConfiguration(key_restrictions=Fido2KeyRestrictions(
            is_enforced=True, enforcement_type=Fido2RestrictionEnforcementType.Block, aa_guids=[ANDROID])),
            request_configuration=no_retry())
    finally:
        client.request_adapter.base_url = home
    cfg = raw(legacy, "GET", PATH).body
    assert cfg["keyRestrictions"] == {"isEnforced": True, "enforcementType": "block", "aaGuids": [ANDROID]}
    assert cfg["isAttestationEnforced"] is False and "passkeyProfiles" not in cfg
    assert cfg["isSelfServiceRegistrationAllowed"] is True and cfg["state"] == "enabled"


async def test_multi_value_passkey_types_survive_only_through_additional_data(client: GraphServiceClient,
                                                                              sim: Simulator) -> None:
    """The SDK's enum list drops "deviceBound,synced" (pitfall 2); additional_data carries it through."""
    def profile(**kw: Any) -> PasskeyProfile:
        return PasskeyProfile(id=PROFILE_ID, name="Default passkey profile",
                              key_restrictions=Fido2KeyRestrictions(is_enforced=False, aa_guids=[]), **kw)

    await _config(client).patch(Fido2AuthenticationMethodConfiguration(passkey_profiles=[
        profile(passkey_types=[PasskeyTypes.DeviceBound, PasskeyTypes.Synced])]), request_configuration=no_retry())
    assert raw(sim, "GET", PATH).body["passkeyProfiles"][0]["passkeyTypes"] == "deviceBound"   # data lost
    await _config(client).patch(Fido2AuthenticationMethodConfiguration(passkey_profiles=[
        profile(additional_data={"passkeyTypes": "deviceBound,synced"})]), request_configuration=no_retry())
    assert raw(sim, "GET", PATH).body["passkeyProfiles"][0]["passkeyTypes"] == "deviceBound,synced"


def test_patch_without_odata_type_is_400_and_changes_nothing(sim: Simulator) -> None:
    """@odata.type is required on the PATCH body."""
    resp = raw(sim, "PATCH", PATH, {"isSelfServiceRegistrationAllowed": False})
    assert resp.status == 400 and resp.body["error"]["code"] == "BadRequest"
    assert raw(sim, "GET", PATH).body["isSelfServiceRegistrationAllowed"] is True


def test_passkey_profiles_list_is_replaced_whole(sim: Simulator) -> None:
    """Sending passkeyProfiles replaces the list; profiles left out are gone."""
    second = {"id": OTHER_PROFILE, "name": "Synced only", "passkeyTypes": "synced",
              "attestationEnforcement": "disabled",
              "keyRestrictions": {"isEnforced": False, "enforcementType": "allow", "aaGuids": []}}
    first = raw(sim, "GET", PATH).body["passkeyProfiles"][0]
    assert raw(sim, "PATCH", PATH, {"@odata.type": FIDO2_TYPE, "passkeyProfiles": [first, second]}).status == 204
    assert [p["id"] for p in raw(sim, "GET", PATH).body["passkeyProfiles"]] == [PROFILE_ID, OTHER_PROFILE]
    assert raw(sim, "PATCH", PATH, {"@odata.type": FIDO2_TYPE, "passkeyProfiles": [first]}).status == 204
    assert [p["id"] for p in raw(sim, "GET", PATH).body["passkeyProfiles"]] == [PROFILE_ID]


@pytest.mark.parametrize("body", [
    {"state": "on"},
    {"keyRestrictions": {"isEnforced": True, "enforcementType": "deny", "aaGuids": []}},
    {"keyRestrictions": {"isEnforced": True, "enforcementType": "allow", "aaGuids": ["not-a-guid"]}},
    {"passkeyProfiles": [{"id": PROFILE_ID, "name": "x", "passkeyTypes": "deviceBound,cloud"}]},
    {"passkeyProfiles": [{"id": PROFILE_ID, "name": "x", "attestationEnforcement": "always"}]},
    {"defaultPasskeyProfile": OTHER_PROFILE},
    {"includeTargets": [{"targetType": "group", "id": "all_users", "allowedPasskeyProfiles": [OTHER_PROFILE]}]},
    {"id": "Email"},
    {"isRegistrationRequired": True},
    {"passkeyProfiles": [{"id": OTHER_PROFILE, "name": "replacement without the default"}]},
])
def test_invalid_patches_are_400(sim: Simulator, body: dict[str, Any]) -> None:
    """Bad enums, GUIDs, unknown fields, a wrong id and dangling profile references are refused."""
    before = raw(sim, "GET", PATH).body
    resp = raw(sim, "PATCH", PATH, {"@odata.type": FIDO2_TYPE, **body})
    assert resp.status == 400, resp.body
    assert raw(sim, "GET", PATH).body == before


async def test_sdk_patch_error_surfaces_as_odata_error(client: GraphServiceClient) -> None:
    """A refused PATCH reaches SDK callers as ODataError 400."""
    with pytest.raises(ODataError) as info:
        await _config(client).patch(Fido2AuthenticationMethodConfiguration(default_passkey_profile=OTHER_PROFILE),
                                    request_configuration=no_retry())
    assert info.value.response_status_code == 400


def test_other_method_configurations_are_not_simulated(sim: Simulator) -> None:
    """Only Fido2 exists here; the segment is case-insensitive."""
    assert raw(sim, "GET", PATH.replace("fido2", "FIDO2")).status == 200
    assert raw(sim, "GET", PATH.replace("fido2", "email")).status == 404


def test_patch_counts_as_a_write(sim: Simulator) -> None:
    """A configuration PATCH costs 1 RU and one write."""
    sim.reset_stats()
    assert raw(sim, "PATCH", PATH, {"@odata.type": FIDO2_TYPE, "state": "disabled"}).status == 204
    stats = sim.stats()
    assert stats["writes"] == 1 and stats["resource_units"] == 1
