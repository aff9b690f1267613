"""Application permissions: each route needs its documented roles, read from the bearer JWT, or Graph's 403."""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from graphsim import permissions
from graphsim.app import build_graph_router
from graphsim.launcher import Simulator
from tests.graphsim.conftest import FIDO2_TYPE, YUBI, Raw, base_tenant, frozen_throttle_clock, raw, start, uid
from tests.graphsim.test_service_principals import PAYROLL, PAYROLL_SP

CA_PATH = "/identity/conditionalAccess/policies"
FIDO2_PATH = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"
STRENGTHS = "/policies/authenticationStrengthPolicies"
AUDIT = ["Policy.Read.AuthenticationMethod", "Policy.Read.All", "User.Read.All", "GroupMember.Read.All",
         "Organization.Read.All", "UserAuthMethod-Passkey.Read.All"]


def jwt(roles: list[str] | None = None, **claims: object) -> str:
    """An unsigned app-only JWT with these `roles` (the simulator reads claims, never a signature)."""
    body: dict[str, object] = {"aud": "https://graph.microsoft.com", "appid": "perm-test", **claims}
    if roles is not None:
        body["roles"] = roles

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return f"{part({'typ': 'JWT', 'alg': 'none'})}.{part(body)}."


def ca_body(apps: list[str]) -> dict:
    return {"displayName": "p", "state": "disabled", "conditions": {
        "clientAppTypes": ["all"], "applications": {"includeApplications": apps},
        "users": {"includeGroups": ["99999999-0000-4000-8000-000000000001"]}},
        "grantControls": {"operator": "OR", "builtInControls": ["mfa"]}}


def denied(got: Raw) -> bool:
    """Graph's 403 envelope: Authorization_RequestDenied with its fixed message and the request ids."""
    error = got.body["error"]
    return (got.status == 403 and error["code"] == "Authorization_RequestDenied"
            and error["message"] == "Insufficient privileges to complete the operation."
            and {"request-id", "client-request-id", "date"} <= set(error["innerError"]))


def ca(sim: Simulator, method: str, path: str, body: object = None, *, token: str) -> Raw:
    """A Conditional Access call one simulated second after the last (the CA limit is 1 request/s)."""
    sim.throttle_clock(advance=1.0)
    return raw(sim, method, path, body, token=token)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A small tenant with one enterprise application."""
    yield from start(base_tenant(6, servicePrincipals=[
        {"id": PAYROLL_SP, "appId": PAYROLL, "displayName": "Payroll", "servicePrincipalType": "Application"}]))


def test_every_route_has_a_documented_requirement() -> None:
    """The permission table names exactly the simulator's routes, and every route but $batch needs a role."""
    names = build_graph_router(None).names()  # type: ignore[arg-type]
    assert sorted(names) == sorted(permissions.ROUTE_ROLES)
    assert [n for n in names if not permissions.ROUTE_ROLES[n]] == ["POST /$batch"]


def test_fido2_patch_needs_the_authentication_method_write_role(sim: Simulator) -> None:
    """Audit's read roles read the FIDO2 configuration but cannot PATCH it (403, unchanged); the write role can."""
    before = raw(sim, "GET", FIDO2_PATH, token=jwt(AUDIT))
    assert before.status == 200
    patch = {"@odata.type": FIDO2_TYPE, "isSelfServiceRegistrationAllowed": False}
    assert denied(raw(sim, "PATCH", FIDO2_PATH, patch, token=jwt(AUDIT)))
    assert raw(sim, "GET", FIDO2_PATH, token=jwt(AUDIT)).body == before.body
    writer = jwt(["Policy.ReadWrite.AuthenticationMethod"])
    assert raw(sim, "GET", FIDO2_PATH, token=writer).status == 200   # ReadWrite includes Read
    assert raw(sim, "PATCH", FIDO2_PATH, patch, token=writer).status == 204
    assert raw(sim, "GET", FIDO2_PATH, token=writer).body["isSelfServiceRegistrationAllowed"] is False
    raw(sim, "PATCH", FIDO2_PATH, {"@odata.type": FIDO2_TYPE, "isSelfServiceRegistrationAllowed": True}, token=writer)


def test_conditional_access_writes_need_both_policy_roles_and_application_read_for_app_ids(sim: Simulator) -> None:
    """Creating a CA policy needs Policy.Read.All and Policy.ReadWrite.ConditionalAccess; naming an app id adds
    Application.Read.All (Directory.Read.All does not stand in); listing needs Policy.Read.All."""
    write_only = jwt(["Policy.ReadWrite.ConditionalAccess"])
    both = ["Policy.ReadWrite.ConditionalAccess", "Policy.Read.All"]
    with frozen_throttle_clock(sim, past=1.0):
        assert denied(ca(sim, "POST", CA_PATH, ca_body(["All"]), token=write_only))
        assert denied(ca(sim, "GET", CA_PATH, token=write_only))     # the list page names Policy.Read.All only
        assert denied(ca(sim, "POST", CA_PATH, ca_body([PAYROLL]), token=jwt([*both, "Directory.Read.All"])))
        assert ca(sim, "GET", CA_PATH, token=jwt(AUDIT)).body["value"] == []
        created = ca(sim, "POST", CA_PATH, ca_body(["All"]), token=jwt(both))
        assert created.status == 201
        named = ca(sim, "POST", CA_PATH, ca_body([PAYROLL]), token=jwt([*both, "Application.Read.All"]))
        assert named.status == 201
        for policy in (created.body, named.body):
            assert denied(ca(sim, "DELETE", f"{CA_PATH}/{policy['id']}", token=write_only))
            assert ca(sim, "DELETE", f"{CA_PATH}/{policy['id']}", token=jwt(both)).status == 204


def test_strength_writes_need_a_policy_write_role(sim: Simulator) -> None:
    """Strengths are read with Policy.Read.AuthenticationMethod and written with Policy.ReadWrite.ConditionalAccess
    (or the documented higher Policy.ReadWrite.AuthenticationMethod), never with read roles."""
    body = {"displayName": "Passkeys only", "allowedCombinations": ["fido2"]}
    assert raw(sim, "GET", STRENGTHS, token=jwt(AUDIT)).status == 200
    assert denied(raw(sim, "POST", STRENGTHS, body, token=jwt(AUDIT)))
    for role in ("Policy.ReadWrite.ConditionalAccess", "Policy.ReadWrite.AuthenticationMethod"):
        made = raw(sim, "POST", STRENGTHS, {**body, "displayName": role}, token=jwt([role]))
        assert made.status == 201, made.body
        assert raw(sim, "DELETE", f"{STRENGTHS}/{made.body['id']}", token=jwt([role])).status == 204


def test_passkeys_are_listed_with_the_read_role_and_deleted_only_with_the_write_role(sim: Simulator) -> None:
    """fido2Methods: UserAuthMethod-Passkey.Read.All lists but cannot delete (the passkey stays); the write role,
    or the older UserAuthenticationMethod.ReadWrite.All, deletes."""
    path = f"/users/{uid(3)}/authentication/fido2Methods"
    listed = raw(sim, "GET", path, token=jwt(["UserAuthMethod-Passkey.Read.All"]))
    assert listed.status == 200 and [m["aaGuid"] for m in listed.body["value"]] == [YUBI]
    assert denied(raw(sim, "GET", path, token=jwt(["User.Read.All"])))
    method = listed.body["value"][0]["id"]
    assert denied(raw(sim, "DELETE", f"{path}/{method}", token=jwt(["UserAuthMethod-Passkey.Read.All"])))
    assert len(raw(sim, "GET", path, token=jwt(AUDIT)).body["value"]) == 1
    assert raw(sim, "DELETE", f"{path}/{method}", token=jwt(["UserAuthenticationMethod.ReadWrite.All"])).status == 204


def test_directory_reads_take_their_role_or_a_documented_broader_one(sim: Simulator) -> None:
    """Users, delta, groups, the organization and service principals each need their least role; the
    Directory.Read.All the pages list stands in; a role for something else does not."""
    reads = {f"/users/{uid(1)}": "User.Read.All", "/users/delta?$select=id,userPrincipalName": "User.Read.All",
             "/groups/99999999-0000-4000-8000-000000000001": "GroupMember.Read.All",
             "/organization": "Organization.Read.All", f"/servicePrincipals(appId='{PAYROLL}')": "Application.Read.All"}
    for path, role in reads.items():
        assert raw(sim, "GET", path, token=jwt([role])).status == 200, path
        assert raw(sim, "GET", path, token=jwt(["Directory.Read.All"])).status == 200, path
        assert denied(raw(sim, "GET", path, token=jwt(["Policy.Read.All"]))), path


def test_batch_items_are_checked_one_by_one(sim: Simulator) -> None:
    """In $batch, an item the token may not make gets its own 403 while the others answer 200."""
    body = {"requests": [
        {"id": "user", "method": "GET", "url": f"/users/{uid(1)}?$select=id"},
        {"id": "keys", "method": "GET", "url": f"/users/{uid(6)}/authentication/fido2Methods"},
        {"id": "patch", "method": "PATCH", "url": FIDO2_PATH, "headers": {
            "Content-Type": "application/json"}, "body": {"@odata.type": FIDO2_TYPE, "state": "disabled"}}]}
    got = raw(sim, "POST", "/$batch", body, token=jwt(["User.Read.All"]))
    assert got.status == 200
    items = {item["id"]: item for item in got.body["responses"]}
    assert items["user"]["status"] == 200
    for name in ("keys", "patch"):
        assert items[name]["status"] == 403
        assert items[name]["body"]["error"]["code"] == "Authorization_RequestDenied"
    assert raw(sim, "GET", FIDO2_PATH, token=jwt(AUDIT)).body["state"] == "enabled"


def test_tokens_that_show_no_role_get_nothing(sim: Simulator) -> None:
    """A JWT without `roles` (or with an empty list) is refused; a delegated token's `scp` scopes count."""
    for token in (jwt(None), jwt([]), jwt(["Not.A.Role"])):
        assert denied(raw(sim, "GET", "/organization", token=token))
    delegated = jwt(None, scp="Organization.Read.All User.Read.All", idtyp="user")
    assert raw(sim, "GET", "/organization", token=delegated).status == 200
    assert denied(raw(sim, "GET", FIDO2_PATH, token=delegated))


def test_opaque_tokens_keep_every_role_unless_the_knob_says_none(sim: Simulator) -> None:
    """An opaque token may do anything by default (the contract tests' token); `opaque_token_roles` "none"
    refuses it everything while JWTs keep their roles; an unknown setting is refused."""
    assert raw(sim, "GET", FIDO2_PATH, token="opaque-token").status == 200
    sim.configure(opaque_token_roles="none")
    try:
        assert denied(raw(sim, "GET", FIDO2_PATH, token="opaque-token"))
        assert denied(raw(sim, "GET", "/organization", token="opaque-token"))
        assert raw(sim, "GET", FIDO2_PATH, token=jwt(AUDIT)).status == 200
    finally:
        sim.configure(opaque_token_roles="all")
    with pytest.raises(RuntimeError, match="opaque_token_roles"):
        sim.configure(opaque_token_roles="some")


def test_without_application_read_no_token_reads_service_principals(sim: Simulator) -> None:
    """`application_read_granted` false withholds Application.Read.All (and its stand-ins) from every token."""
    path = f"/servicePrincipals(appId='{PAYROLL}')"
    sim.configure(application_read_granted=False)
    try:
        for token in ("opaque-token", jwt(["Application.Read.All"]), jwt(["Directory.Read.All"])):
            assert denied(raw(sim, "GET", path, token=token))
        assert raw(sim, "GET", f"/users/{uid(1)}", token=jwt(["Directory.Read.All"])).status == 200
    finally:
        sim.configure(application_read_granted=True)
    assert raw(sim, "GET", path, token=jwt(["Application.Read.All"])).status == 200


def test_the_requirement_logic() -> None:
    """Clauses all must hold, any role of a clause holds it; ReadWrite grants Read of the same resource only."""
    need = permissions.requirement("POST /identity/conditionalAccess/policies", lambda: ca_body([PAYROLL]))
    assert need == (("Policy.Read.All",), ("Policy.ReadWrite.ConditionalAccess",), ("Application.Read.All",))
    assert permissions.unmet(need, {"Policy.ReadWrite.ConditionalAccess", "Application.ReadWrite.All"}) == [
        "Policy.Read.All"]
    assert permissions.unmet(need, None) == []
    assert permissions.unmet(need, None, application_read=False) == ["Application.Read.All"]
    keywords = permissions.requirement("POST /identity/conditionalAccess/policies",
                                       lambda: ca_body(["All", "Office365"]))
    assert len(keywords) == 2
    assert permissions.token_grants("opaque") is None and permissions.token_grants("a.!!!.c") is None
    assert permissions.token_grants(jwt(["A"], scp="B C")) == frozenset({"A", "B", "C"})
