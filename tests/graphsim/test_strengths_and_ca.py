"""Authentication strengths, FIDO2 combination configurations and Conditional Access policies."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphServiceClient
from msgraph.generated.models.authentication_method_modes import AuthenticationMethodModes
from msgraph.generated.models.authentication_strength_policy import AuthenticationStrengthPolicy
from msgraph.generated.models.authentication_strength_policy_type import AuthenticationStrengthPolicyType
from msgraph.generated.models.conditional_access_applications import ConditionalAccessApplications
from msgraph.generated.models.conditional_access_client_app import ConditionalAccessClientApp
from msgraph.generated.models.conditional_access_condition_set import ConditionalAccessConditionSet
from msgraph.generated.models.conditional_access_grant_controls import ConditionalAccessGrantControls
from msgraph.generated.models.conditional_access_policy import ConditionalAccessPolicy
from msgraph.generated.models.conditional_access_policy_state import ConditionalAccessPolicyState
from msgraph.generated.models.conditional_access_users import ConditionalAccessUsers
from msgraph.generated.models.fido2_combination_configuration import Fido2CombinationConfiguration
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.policies.authentication_strength_policies.authentication_strength_policies_request_builder import (  # noqa: E501
    AuthenticationStrengthPoliciesRequestBuilder,
)
from msgraph.generated.policies.authentication_strength_policies.item.update_allowed_combinations.update_allowed_combinations_post_request_body import (  # noqa: E501
    UpdateAllowedCombinationsPostRequestBody,
)

from graphsim.config import SimConfig
from graphsim.launcher import Simulator
from tests.graphsim.conftest import (
    ANDROID,
    YUBI,
    base_tenant,
    frozen_throttle_clock,
    no_retry,
    raw,
    sdk_backoff_moves_the_clock,
    start,
)

LEGACY = "cccccccc-0000-4000-8000-000000000001"
PHISHING_RESISTANT = "00000000-0000-0000-0000-000000000004"
PILOT = "99999999-0000-4000-8000-000000000001"
STRENGTHS = "/policies/authenticationStrengthPolicies"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A tenant with one custom strength holding a multi-method combination."""
    yield from start(base_tenant(3))


def _strengths(client: GraphServiceClient):  # type: ignore[no-untyped-def]
    return client.policies.authentication_strength_policies


def _ca_policy(strength_id: str, name: str = "Require approved passkeys") -> ConditionalAccessPolicy:
    return ConditionalAccessPolicy(
        display_name=name, state=ConditionalAccessPolicyState.EnabledForReportingButNotEnforced,
        conditions=ConditionalAccessConditionSet(
            client_app_types=[ConditionalAccessClientApp.All],
            applications=ConditionalAccessApplications(include_applications=["All"]),
            users=ConditionalAccessUsers(include_groups=[PILOT])),
        grant_controls=ConditionalAccessGrantControls(
            operator="OR", authentication_strength=AuthenticationStrengthPolicy(id=strength_id)))


async def _new_strength(client: GraphServiceClient, name: str) -> AuthenticationStrengthPolicy:
    return await _strengths(client).post(AuthenticationStrengthPolicy(
        display_name=name, allowed_combinations=[AuthenticationMethodModes.Fido2]), request_configuration=no_retry())


# ------------------------------------------------------------------ strengths
async def test_multi_method_combination_parses_as_none_but_raw_json_keeps_it(client: GraphServiceClient,
                                                                             sim: Simulator) -> None:
    """"password,sms" is None in the SDK model (pitfall 3) while the raw JSON round-trips it exactly."""
    pol = await _strengths(client).by_authentication_strength_policy_id(LEGACY).get(request_configuration=no_retry())
    assert pol.allowed_combinations == [None, AuthenticationMethodModes.Fido2]
    assert raw(sim, "GET", f"{STRENGTHS}/{LEGACY}").body["allowedCombinations"] == ["password,sms", "fido2"]


async def test_builtins_are_present_and_filterable(client: GraphServiceClient, sim: Simulator) -> None:
    """The three built-ins exist in every tenant; $filter on policyType and displayName works."""
    query = AuthenticationStrengthPoliciesRequestBuilder.AuthenticationStrengthPoliciesRequestBuilderGetQueryParameters
    params = query(filter="policyType eq 'builtIn'")
    got = await _strengths(client).get(RequestConfiguration(query_parameters=params))
    assert sorted(p.id for p in got.value) == ["00000000-0000-0000-0000-00000000000" + d for d in "234"]
    assert all(p.policy_type == AuthenticationStrengthPolicyType.BuiltIn for p in got.value)
    named = raw(sim, "GET", f"{STRENGTHS}?$filter=displayName eq 'Legacy combo'".replace(" ", "%20")).body
    assert [p["id"] for p in named["value"]] == [LEGACY]
    has = raw(sim, "GET", f"{STRENGTHS}?$filter=allowedCombinations/any(x:x%20has%20'sms')").body
    assert LEGACY in {p["id"] for p in has["value"]}


async def test_create_rename_and_delete_a_custom_strength(client: GraphServiceClient, sim: Simulator) -> None:
    """POST makes a custom mfa strength with a server id and dates; PATCH renames (204); DELETE removes (204)."""
    pol = await _new_strength(client, "Passkeys only")
    assert pol.policy_type == AuthenticationStrengthPolicyType.Custom and pol.id and pol.created_date_time
    assert [r.value for r in pol.requirements_satisfied] == ["mfa"]
    item = _strengths(client).by_authentication_strength_policy_id(pol.id)
    await item.patch(AuthenticationStrengthPolicy(display_name="Passkeys (renamed)"), request_configuration=no_retry())
    assert raw(sim, "GET", f"{STRENGTHS}/{pol.id}").body["displayName"] == "Passkeys (renamed)"
    await item.delete(request_configuration=no_retry())
    assert raw(sim, "GET", f"{STRENGTHS}/{pol.id}").status == 404


def test_multi_method_combinations_can_be_created_raw(sim: Simulator) -> None:
    """allowedCombinations written as raw strings (the SDK enum can't) are stored exactly; unknown methods 400."""
    resp = raw(sim, "POST", STRENGTHS, {"displayName": "Helpdesk", "allowedCombinations": ["password,sms", "fido2"]})
    assert resp.status == 201 and resp.body["allowedCombinations"] == ["password,sms", "fido2"]
    assert raw(sim, "POST", STRENGTHS, {"displayName": "Bad", "allowedCombinations": ["password,pigeon"]}).status == 400
    assert raw(sim, "DELETE", f"{STRENGTHS}/{resp.body['id']}").status == 204


def test_builtin_strengths_are_read_only(sim: Simulator) -> None:
    """Built-ins cannot be renamed, deleted, re-combined or given combination configurations."""
    base = f"{STRENGTHS}/{PHISHING_RESISTANT}"
    assert raw(sim, "PATCH", base, {"displayName": "Mine now"}).status == 400
    assert raw(sim, "DELETE", base).status == 400
    assert raw(sim, "POST", f"{base}/updateAllowedCombinations", {"allowedCombinations": ["fido2"]}).status == 400
    typed = {"@odata.type": "#microsoft.graph.fido2CombinationConfiguration", "appliesToCombinations": ["fido2"],
             "allowedAAGUIDs": [YUBI]}
    assert raw(sim, "POST", f"{base}/combinationConfigurations", typed).status == 400


async def test_update_allowed_combinations_reports_before_and_after(client: GraphServiceClient) -> None:
    """updateAllowedCombinations answers 200 with previous and current combinations."""
    pol = await _new_strength(client, "Changing")
    result = await _strengths(client).by_authentication_strength_policy_id(pol.id).update_allowed_combinations.post(
        UpdateAllowedCombinationsPostRequestBody(allowed_combinations=[
            AuthenticationMethodModes.Fido2, AuthenticationMethodModes.WindowsHelloForBusiness]),
        request_configuration=no_retry())
    assert result.previous_combinations == [AuthenticationMethodModes.Fido2]
    assert result.current_combinations == [AuthenticationMethodModes.Fido2,
                                           AuthenticationMethodModes.WindowsHelloForBusiness]
    assert result.conditional_access_references == []


async def test_fido2_combination_configuration_lifecycle(client: GraphServiceClient, sim: Simulator) -> None:
    """POST (201, server id), list, PATCH (allowedAAGUIDs replaced whole, 204), DELETE (204) via the SDK."""
    pol = await _new_strength(client, "Approved keys")
    configs = _strengths(client).by_authentication_strength_policy_id(pol.id).combination_configurations
    made = await configs.post(Fido2CombinationConfiguration(
        applies_to_combinations=[AuthenticationMethodModes.Fido2], allowed_a_a_g_u_i_ds=[YUBI]),
        request_configuration=no_retry())
    assert made.id and made.allowed_a_a_g_u_i_ds == [YUBI]
    assert [c.id for c in (await configs.get(request_configuration=no_retry())).value] == [made.id]
    await configs.by_authentication_combination_configuration_id(made.id).patch(
        Fido2CombinationConfiguration(allowed_a_a_g_u_i_ds=[ANDROID]), request_configuration=no_retry())
    stored = raw(sim, "GET", f"{STRENGTHS}/{pol.id}").body["combinationConfigurations"]
    assert stored[0]["allowedAAGUIDs"] == [ANDROID]
    await configs.by_authentication_combination_configuration_id(made.id).delete(request_configuration=no_retry())
    assert raw(sim, "GET", f"{STRENGTHS}/{pol.id}/combinationConfigurations").body["value"] == []


def test_combination_configuration_needs_type_and_fido2_only(sim: Simulator) -> None:
    """Untyped bodies and appliesToCombinations other than ["fido2"] are refused."""
    pol = raw(sim, "POST", STRENGTHS, {"displayName": "Typed", "allowedCombinations": ["fido2"]}).body
    path = f"{STRENGTHS}/{pol['id']}/combinationConfigurations"
    assert raw(sim, "POST", path, {"appliesToCombinations": ["fido2"], "allowedAAGUIDs": [YUBI]}).status == 400
    typed = {"@odata.type": "#microsoft.graph.fido2CombinationConfiguration", "allowedAAGUIDs": [YUBI]}
    assert raw(sim, "POST", path, {**typed, "appliesToCombinations": ["fido2", "sms"]}).status == 400
    assert raw(sim, "POST", path, {**typed, "appliesToCombinations": ["fido2"]}).status == 201


def test_alias_path_serves_the_same_strengths(sim: Simulator) -> None:
    """/identity/conditionalAccess/authenticationStrength/policies is the same collection."""
    alias = raw(sim, "GET", f"/identity/conditionalAccess/authenticationStrength/policies/{LEGACY}")
    assert alias.status == 200 and alias.body["allowedCombinations"] == ["password,sms", "fido2"]


# ------------------------------------------------------------------ Conditional Access
async def test_ca_policy_with_strength_and_usage(client: GraphServiceClient, sim: Simulator) -> None:
    """A CA policy requiring a strength is created (201), listed, shows in usage and blocks deleting the strength."""
    pol = await _new_strength(client, "For CA")
    ca = await client.identity.conditional_access.policies.post(_ca_policy(pol.id), request_configuration=no_retry())
    assert ca.id and ca.state == ConditionalAccessPolicyState.EnabledForReportingButNotEnforced
    assert ca.grant_controls.authentication_strength.id == pol.id
    listed = await client.identity.conditional_access.policies.get(request_configuration=no_retry())
    assert [p.id for p in listed.value] == [ca.id]
    usage = await _strengths(client).by_authentication_strength_policy_id(pol.id).usage.get(
        request_configuration=no_retry())
    assert [p.id for p in usage.mfa] == [ca.id]
    assert raw(sim, "DELETE", f"{STRENGTHS}/{pol.id}").status == 400
    await client.identity.conditional_access.policies.by_conditional_access_policy_id(ca.id).patch(
        ConditionalAccessPolicy(state=ConditionalAccessPolicyState.Disabled), request_configuration=no_retry())
    assert raw(sim, "GET", f"/identity/conditionalAccess/policies/{ca.id}").body["state"] == "disabled"
    await client.identity.conditional_access.policies.by_conditional_access_policy_id(ca.id).delete(
        request_configuration=no_retry())
    assert raw(sim, "DELETE", f"{STRENGTHS}/{pol.id}").status == 204


async def test_ca_policy_with_unknown_strength_is_400(client: GraphServiceClient) -> None:
    """A grant control pointing at a strength that doesn't exist is refused."""
    with pytest.raises(ODataError) as info:
        await client.identity.conditional_access.policies.post(
            _ca_policy("dddddddd-0000-4000-8000-00000000dead"), request_configuration=no_retry())
    assert info.value.response_status_code == 400


@pytest.mark.parametrize("change", [
    {"state": "on"}, {"conditions": None}, {"grantControls": None},
    {"grantControls": {"operator": "XOR", "builtInControls": ["mfa"]}},
    {"grantControls": {"operator": "OR", "builtInControls": ["mfa"],
                       "authenticationStrength": {"id": PHISHING_RESISTANT}}},
])
def test_invalid_ca_policies_are_400(sim: Simulator, change: dict[str, object]) -> None:
    """Bad state, missing conditions or controls, bad operator, mfa plus a strength: all 400."""
    body = {"displayName": "x", "state": "disabled",
            "conditions": {"applications": {"includeApplications": ["All"]}, "users": {"includeUsers": ["All"]}},
            "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}, **change}
    assert raw(sim, "POST", "/identity/conditionalAccess/policies", body).status == 400


def test_ca_rate_limit_defaults_to_one_per_second() -> None:
    """Graph's documented Conditional Access limit is the knob's default."""
    assert SimConfig().ca_requests_per_second == 1.0


def test_ca_second_call_within_the_window_is_429_without_retry_after(sim: Simulator) -> None:
    """A second CA call inside the window is a 429 TooManyRequests carrying no Retry-After; later ones pass.

    The window is shortened to 0.2 s with the knob and the throttle's clock is frozen and moved by hand, so
    the machine's speed cannot move a call across the window; the logic is the same at 1 s."""
    sim.configure(ca_requests_per_second=5.0)
    try:
        with frozen_throttle_clock(sim, past=1.0):
            assert raw(sim, "GET", "/identity/conditionalAccess/policies").status == 200
            sim.throttle_clock(advance=0.15)
            second = raw(sim, "GET", "/identity/conditionalAccess/policies")
            assert second.status == 429 and second.body["error"]["code"] == "TooManyRequests"
            assert "Retry-After" not in second.headers
            sim.throttle_clock(advance=0.1)
            assert raw(sim, "GET", "/identity/conditionalAccess/policies").status == 200
    finally:
        sim.configure(ca_requests_per_second=1000.0)


async def test_sdk_retry_handler_backs_off_on_ca_429(client: GraphServiceClient, sim: Simulator,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Retry-After the SDK falls back to its own backoff, and one retry gets through.

    The throttle's clock is frozen and the SDK's backoff sleep moves it instead of waiting, so the retry
    lands exactly one backoff later on the simulator's clock however loaded the machine is."""
    slept = sdk_backoff_moves_the_clock(sim, monkeypatch)
    sim.configure(ca_requests_per_second=5.0)
    try:
        with frozen_throttle_clock(sim, past=1.0):
            sim.reset_stats()
            assert raw(sim, "GET", "/identity/conditionalAccess/policies").status == 200
            one_retry = RequestConfiguration(options=[RetryHandlerOption(max_retries=1, delay=0)])
            listed = await client.identity.conditional_access.policies.get(request_configuration=one_retry)
            assert listed.value is not None
            assert sim.stats()["throttled"]["ca"] == 1
            assert len(slept) == 1 and slept[0] >= 0.2  # the SDK's own backoff outlasted the window
    finally:
        sim.configure(ca_requests_per_second=1000.0)
