"""The write-permission check: the app token's roles, the roles each planned write needs, fail closed."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from shared.errors import MissingGraphPermission
from shared.graph.permissions import (
    ALSO_ACCEPTED,
    APPLICATION_READ,
    WRITE_ROLES,
    check_token,
    missing_roles,
    required_roles,
    token_claims,
)
from shared.graph.policy_paths import CA_PATH, FIDO2_PATH, STRENGTHS_PATH
from shared.policy.plan_model import WRITE_OPS

ROOT = Path(__file__).resolve().parents[2]
PERMISSIONS = json.loads((ROOT / "infra" / "graph-permissions.json").read_text())
APP_GUID = "00000002-0000-0ff1-ce00-000000000000"


def unsigned_jwt(claims: dict) -> str:
    """A JWT as Entra shapes it, unsigned (the check reads claims only)."""
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return f"{part({'typ': 'JWT', 'alg': 'none'})}.{part(claims)}."


def granted(*conditions: str) -> set[str]:
    """The roles infra/graph-permissions.json grants for the given `when` conditions."""
    return {e["role"] for e in PERMISSIONS["roles"] if e["when"] in conditions}


def ca_write(op: str, apps: list[str]) -> dict:
    body = {"displayName": "x", "conditions": {"applications": {"includeApplications": apps}}}
    return {"op": op, "method": "POST", "path": CA_PATH, "target": "x", "body": body}


def test_every_planned_write_kind_has_a_role() -> None:
    """Each op the planner can emit maps to at least one Graph application permission."""
    assert set(WRITE_OPS) <= set(WRITE_ROLES)
    assert all(WRITE_ROLES[op] for op in WRITE_OPS)


def test_the_roles_the_code_asks_for_are_the_ones_infra_grants() -> None:
    """Every role the check can require is listed in infra/graph-permissions.json (one truth for both)."""
    documented = {e["role"] for e in PERMISSIONS["roles"]}
    needed = {role for roles in WRITE_ROLES.values() for role in roles} | {APPLICATION_READ}
    assert needed <= documented


def test_every_deployment_may_confirm_its_tenant() -> None:
    """GET /organization's application permission is granted always, whatever the mode and switches."""
    from shared.graph.tenant import TENANT_READ

    assert TENANT_READ in granted("always")


def test_fido2_patch_needs_the_authentication_method_write_role() -> None:
    """PATCH of the FIDO2 configuration needs Policy.ReadWrite.AuthenticationMethod, nothing else."""
    writes = [{"op": "patch_fido2", "method": "PATCH", "path": FIDO2_PATH, "target": "fido2", "body": {}}]
    assert required_roles(writes) == {"Policy.ReadWrite.AuthenticationMethod"}


def test_strength_writes_need_the_conditional_access_write_role() -> None:
    """Strengths and their combination configurations are written under Policy.ReadWrite.ConditionalAccess."""
    writes = [{"op": op, "method": "POST", "path": STRENGTHS_PATH, "target": "s", "body": {}}
              for op in ("create_strength", "update_strength", "update_strength_combinations",
                         "create_combination_configuration", "update_combination_configuration")]
    assert required_roles(writes) == {"Policy.ReadWrite.ConditionalAccess"}


def test_a_ca_write_naming_application_ids_also_needs_application_read() -> None:
    """A CA policy body with an application GUID needs Application.Read.All; keywords such as All do not."""
    plain = required_roles([ca_write("create_ca_policy", ["All"])])
    assert plain == {"Policy.ReadWrite.ConditionalAccess", "Policy.Read.All"}
    named = required_roles([ca_write("update_ca_policy", ["Office365", APP_GUID])])
    assert named == plain | {APPLICATION_READ}


def test_an_empty_plan_needs_no_role() -> None:
    """Nothing to write, nothing to check."""
    assert required_roles([]) == set()


def test_audit_roles_cover_no_write_and_enforce_roles_cover_every_write() -> None:
    """The infra selection for audit grants no write role; enforce grants every role a write needs
    (Application.Read.All only when its opt-in is on)."""
    every_write = [{"op": op, "method": "POST", "path": "/x", "target": "t", "body": {}} for op in WRITE_OPS]
    audit = granted("always", "audit", "keepStalePasskeys")
    assert missing_roles(required_roles(every_write), audit) == ["Policy.ReadWrite.AuthenticationMethod",
                                                                  "Policy.ReadWrite.ConditionalAccess"]
    enforce = granted("always", "enforce", "keepStalePasskeys")
    assert missing_roles(required_roles(every_write), enforce) == []
    with_apps = [*every_write, ca_write("create_ca_policy", [APP_GUID])]
    assert missing_roles(required_roles(with_apps), enforce) == [APPLICATION_READ]
    assert missing_roles(required_roles(with_apps), enforce | granted("readApplications")) == []


def test_passkey_deletion_needs_the_passkey_write_role_or_the_older_broader_one() -> None:
    """Deleting a passkey needs UserAuthMethod-Passkey.ReadWrite.All (or the broader UserAuthenticationMethod one)."""
    need = required_roles([{"op": "delete_passkey"}])
    assert need == {"UserAuthMethod-Passkey.ReadWrite.All"}
    assert missing_roles(need, {"UserAuthMethod-Passkey.Read.All"}) == ["UserAuthMethod-Passkey.ReadWrite.All"]
    assert missing_roles(need, {"UserAuthenticationMethod.ReadWrite.All"}) == []


def test_token_claims_reads_a_jwt_payload_and_refuses_anything_else() -> None:
    """The payload of a three-part token is read without verifying; opaque or garbled tokens give None."""
    assert token_claims(unsigned_jwt({"roles": ["A"], "appid": "x"})) == {"roles": ["A"], "appid": "x"}
    for bad in ("", "dev", "a.b", "a.!!!.c", f"x.{base64.urlsafe_b64encode(b'[1]').decode()}.y"):
        assert token_claims(bad) is None


def test_a_token_without_a_role_a_write_needs_is_refused_naming_it() -> None:
    """Missing roles raise 403 missingGraphPermission with every missing role named."""
    need = {"Policy.ReadWrite.AuthenticationMethod", "Policy.ReadWrite.ConditionalAccess"}
    token = unsigned_jwt({"roles": ["Policy.Read.All", "Policy.ReadWrite.ConditionalAccess"]})
    with pytest.raises(MissingGraphPermission) as caught:
        check_token(token, need, local=False)
    assert caught.value.status == 403 and caught.value.code == "missingGraphPermission"
    assert "Policy.ReadWrite.AuthenticationMethod" in caught.value.message
    assert caught.value.detail == {"missingRoles": ["Policy.ReadWrite.AuthenticationMethod"],
                                   "requiredRoles": sorted(need)}
    check_token(unsigned_jwt({"roles": sorted(need)}), need, local=False)  # enough: no error


@pytest.mark.parametrize("token", ["opaque-token", "", unsigned_jwt({"appid": "x"}), unsigned_jwt({"roles": "A"})])
def test_in_azure_a_token_whose_roles_cannot_be_read_is_refused(token: str) -> None:
    """Fail closed: outside loopback, a non-JWT token or one without a roles list is refused."""
    with pytest.raises(MissingGraphPermission) as caught:
        check_token(token, {"Policy.ReadWrite.AuthenticationMethod"}, local=False)
    assert "Policy.ReadWrite.AuthenticationMethod" in caught.value.message


def test_a_delegated_token_is_checked_by_its_scopes() -> None:
    """The CLI under an administrator's sign-in sends a delegated token: its `scp` scopes are checked."""
    need = {"Policy.ReadWrite.AuthenticationMethod"}
    check_token(unsigned_jwt({"scp": "Policy.Read.All Policy.ReadWrite.AuthenticationMethod"}), need, local=False)
    with pytest.raises(MissingGraphPermission):
        check_token(unsigned_jwt({"scp": "User.Read Directory.AccessAsUser.All"}), need, local=False)


def test_only_the_loopback_dev_token_may_be_opaque(caplog: pytest.LogCaptureFixture) -> None:
    """Against the simulator an opaque dev token skips the check, and the skip is logged."""
    caplog.set_level("INFO", logger="shared.graph.permissions")
    check_token("test-token", {"Policy.ReadWrite.AuthenticationMethod"}, local=True)
    assert "skipped" in caplog.text
    with pytest.raises(MissingGraphPermission):  # a JWT on loopback is checked like any other
        check_token(unsigned_jwt({"roles": []}), {"Policy.ReadWrite.AuthenticationMethod"}, local=True)


def test_nothing_to_write_never_asks_for_a_token() -> None:
    """An empty requirement passes whatever the token (no-op applies must not fail)."""
    check_token("", set(), local=False)


#: The simulator route each write kind is sent to (graphsim/permissions.py names routes by their pattern).
_STRENGTH = "/policies/authenticationStrengthPolicies"
_SIM_ROUTE = {
    "patch_fido2": "PATCH /policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{cfg}",
    "create_strength": f"POST {_STRENGTH}",
    "update_strength": f"PATCH {_STRENGTH}/{{id}}",
    "update_strength_combinations": f"POST {_STRENGTH}/{{id}}/updateAllowedCombinations",
    "create_combination_configuration": f"POST {_STRENGTH}/{{id}}/combinationConfigurations",
    "update_combination_configuration": f"PATCH {_STRENGTH}/{{id}}/combinationConfigurations/{{cid}}",
    "create_ca_policy": "POST /identity/conditionalAccess/policies",
    "update_ca_policy": "PATCH /identity/conditionalAccess/policies/{id}",
    "delete_strength": f"DELETE {_STRENGTH}/{{id}}",
    "delete_combination_configuration": f"DELETE {_STRENGTH}/{{id}}/combinationConfigurations/{{cid}}",
    "delete_ca_policy": "DELETE /identity/conditionalAccess/policies/{id}",
    "delete_passkey": "DELETE /users/{id}/authentication/fido2Methods/{mid}",
}


@pytest.mark.parametrize("op", sorted(WRITE_ROLES))
def test_a_token_the_check_lets_through_is_one_graph_accepts(op: str) -> None:
    """For every write kind and every set of the roles involved, a token that passes the app's own check also
    meets the Graph simulator's documented requirement, so an apply is never refused halfway by Graph."""
    from itertools import combinations

    from graphsim import permissions as sim

    bodies = ([ca_write(op, ["All"])["body"], ca_write(op, [APP_GUID])["body"]] if "ca_policy" in op
              else [{}])
    for body in bodies:
        write = {"op": op, "method": "POST", "path": "/x", "target": "t", "body": body}
        need = sim.requirement(_SIM_ROUTE[op], lambda b=body: b)  # type: ignore[misc]
        universe = sorted({*required_roles([write]), *{r for roles in ALSO_ACCEPTED.values() for r in roles},
                           *{r for clause in need for r in clause}, "Directory.Read.All", "Directory.ReadWrite.All"})
        for size in range(len(universe) + 1):
            for granted_now in combinations(universe, size):
                if not missing_roles(required_roles([write]), granted_now):
                    assert sim.unmet(need, granted_now) == [], (op, body, granted_now)
