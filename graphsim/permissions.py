"""Which application permissions each Graph route needs, and whether a bearer token carries them.

Graph answers a call whose token lacks the permission with 403 `Authorization_RequestDenied`, "Insufficient
privileges to complete the operation." The simulator does the same, from this one table:

- `ROUTE_ROLES` maps every route of `graphsim.app.build_graph_router` (by its name, `METHOD /pattern`) to its
  requirement: a tuple of clauses, every clause satisfied by any one of its roles. The first role of a clause
  is the least-privileged one Graph documents; the others are the higher-privileged ones the same API page
  lists (Graph's own "a higher permission also works", kept to what each page says). Sources: the permission
  tables of the Graph v1.0 API reference (learn.microsoft.com/graph/api/<page>, and their generated includes
  in microsoftgraph/microsoft-graph-docs-contrib `api-reference/v1.0/includes/permissions/`), named per row.
- A Conditional Access create or update whose `conditions.applications` names an application by id also needs
  `Application.Read.All` (the create page lists it; the update is read the same way, the pessimistic reading).
- A granted `X.ReadWrite.Y` also grants `X.Read.Y` (Graph's "ReadWrite includes Read" for one resource);
  broader stand-ins such as Directory.Read.All count only where a page lists them.
- A JWT grants its `roles` claim (application permissions, app-only tokens) and its `scp` scopes (delegated
  tokens, checked against the same table; the signed-in user's directory role is not modelled). The token is
  decoded, never verified. A JWT with neither claim grants nothing.
- An opaque (non-JWT) token grants every permission under knob `opaque_token_roles` "all" (the default, so the
  contract tests' token "contract-test" works) or none under "none".
- Knob `application_read_granted` false withholds Application.Read.All from every token: each requirement
  that needs it fails, as in a tenant that never consented to it.

The `$batch` envelope needs no permission; each item is checked on its own (its own 403).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from graphsim.errors import GraphApiError

#: A requirement: every clause must be met by at least one of its roles.
Requirement = tuple[tuple[str, ...], ...]
DENIED_CODE = "Authorization_RequestDenied"
DENIED_MESSAGE = "Insufficient privileges to complete the operation."
APPLICATION_READ = "Application.Read.All"

# --- the clauses, as the API pages list them (least privileged first) -------------------------------------
# user-get, user-list, user-delta: Application User.Read.All; higher Directory.Read.All, Directory.ReadWrite.All,
# User.ReadWrite.All. directory-deleteditems-get (users) lists the same four.
_USER_READ = ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
# user-post-users, user-update: User.ReadWrite.All; higher Directory.ReadWrite.All.
_USER_WRITE = ("User.ReadWrite.All", "Directory.ReadWrite.All")
# user-delete, directory-deleteditems-restore / -delete (users): User.DeleteRestore.All (the granular permission
# of December 2024); User.ReadWrite.All on the older pages. Directory.ReadWrite.All does not delete users.
_USER_DELETE = ("User.DeleteRestore.All", "User.ReadWrite.All")
# fido2authenticationmethod-list: UserAuthMethod-Passkey.Read.All; higher UserAuthMethod-Passkey.ReadWrite.All,
# UserAuthenticationMethod.Read.All, UserAuthenticationMethod.ReadWrite.All.
_PASSKEY_LIST = ("UserAuthMethod-Passkey.Read.All", "UserAuthMethod-Passkey.ReadWrite.All",
                 "UserAuthenticationMethod.Read.All", "UserAuthenticationMethod.ReadWrite.All")
# fido2authenticationmethod-get: application least "Not supported"; higher UserAuthenticationMethod.Read.All,
# UserAuthenticationMethod.ReadWrite.All (the passkey-only permissions are not listed for a single read).
_PASSKEY_GET = ("UserAuthenticationMethod.Read.All", "UserAuthenticationMethod.ReadWrite.All")
# fido2authenticationmethod-delete: UserAuthMethod-Passkey.ReadWrite.All; UserAuthenticationMethod.ReadWrite.All
# on the older pages (graph-contract.md keeps both).
_PASSKEY_DELETE = ("UserAuthMethod-Passkey.ReadWrite.All", "UserAuthenticationMethod.ReadWrite.All")
# group-get, group-list: GroupMember.Read.All; higher Group.Read.All, Group.ReadWrite.All, Directory.Read.All,
# Directory.ReadWrite.All.
_GROUP_READ = ("GroupMember.Read.All", "Group.Read.All", "Group.ReadWrite.All", "Directory.Read.All",
               "Directory.ReadWrite.All")
# serviceprincipal-get: Application.Read.All; higher Application.ReadWrite.OwnedBy, Application.ReadWrite.All,
# Directory.Read.All.
_APP_READ = (APPLICATION_READ, "Application.ReadWrite.OwnedBy", "Application.ReadWrite.All", "Directory.Read.All")
# organization-list / organization-get: Organization.Read.All; higher Directory.Read.All,
# Organization.ReadWrite.All, Directory.ReadWrite.All (an older organization-list page named Directory.Read.All
# only; the current page and msgraph-metadata's permission map accept Organization.Read.All).
_ORG_READ = ("Organization.Read.All", "Directory.Read.All", "Organization.ReadWrite.All", "Directory.ReadWrite.All")
# authenticationmethodspolicy-get and the fido2 configuration get: Policy.Read.AuthenticationMethod; higher
# Policy.ReadWrite.AuthenticationMethod, Policy.Read.All.
_METHODS_READ = ("Policy.Read.AuthenticationMethod", "Policy.ReadWrite.AuthenticationMethod", "Policy.Read.All")
# fido2authenticationmethodconfiguration-update: Policy.ReadWrite.AuthenticationMethod, nothing higher.
_METHODS_WRITE = ("Policy.ReadWrite.AuthenticationMethod",)
# authenticationstrengthpolicy-get/-list, -usage, list/get combinationConfigurations:
# Policy.Read.AuthenticationMethod; higher Policy.Read.All, Policy.ReadWrite.AuthenticationMethod,
# Policy.ReadWrite.ConditionalAccess.
_STRENGTH_READ = ("Policy.Read.AuthenticationMethod", "Policy.Read.All", "Policy.ReadWrite.AuthenticationMethod",
                  "Policy.ReadWrite.ConditionalAccess")
# authenticationstrengthpolicy create/update/delete/updateAllowedCombinations and the combination
# configurations' writes: Policy.ReadWrite.ConditionalAccess; higher Policy.ReadWrite.AuthenticationMethod.
_STRENGTH_WRITE = ("Policy.ReadWrite.ConditionalAccess", "Policy.ReadWrite.AuthenticationMethod")
# conditionalaccessroot-list-policies, conditionalaccesspolicy-get: Policy.Read.All; higher "Not available".
_CA_READ = ("Policy.Read.All",)
# conditionalaccessroot-post-policies, conditionalaccesspolicy-update/-delete: Policy.Read.All *and*
# Policy.ReadWrite.ConditionalAccess (two clauses; neither stands in for the other).
_CA_WRITE: Requirement = (("Policy.Read.All",), ("Policy.ReadWrite.ConditionalAccess",))
# subscription-post-subscriptions and the other subscription calls: the permission to read the resource
# (users: User.Read.All), and the simulator subscribes only to users.
_SUBSCRIPTION = _USER_READ

_STRENGTHS = ("policies/authenticationStrengthPolicies", "identity/conditionalAccess/authenticationStrength/policies")
_FIDO2_CONFIGS = "policies/authenticationMethodsPolicy/authenticationMethodConfigurations"


def _strength_routes() -> dict[str, Requirement]:
    out: dict[str, Requirement] = {}
    for base in _STRENGTHS:
        for method, tail, clause in (
                ("GET", "", _STRENGTH_READ), ("POST", "", _STRENGTH_WRITE), ("GET", "/{id}", _STRENGTH_READ),
                ("PATCH", "/{id}", _STRENGTH_WRITE), ("DELETE", "/{id}", _STRENGTH_WRITE),
                ("POST", "/{id}/updateAllowedCombinations", _STRENGTH_WRITE), ("GET", "/{id}/usage", _STRENGTH_READ),
                ("GET", "/{id}/combinationConfigurations", _STRENGTH_READ),
                ("POST", "/{id}/combinationConfigurations", _STRENGTH_WRITE),
                ("GET", "/{id}/combinationConfigurations/{cid}", _STRENGTH_READ),
                ("PATCH", "/{id}/combinationConfigurations/{cid}", _STRENGTH_WRITE),
                ("DELETE", "/{id}/combinationConfigurations/{cid}", _STRENGTH_WRITE)):
            out[f"{method} /{base}{tail}"] = (clause,)
    return out


# userregistrationdetails-get / authenticationmethodsroot-list-userregistrationdetails: AuditLog.Read.All;
# higher "Not available".
_REPORTS_READ = ("AuditLog.Read.All",)


#: Every Graph route's requirement, by route name. tests/graphsim/test_permissions.py holds it to the router.
ROUTE_ROLES: dict[str, Requirement] = {
    "POST /$batch": (),  # the envelope; every item is checked as its own call
    "GET /users/delta": (_USER_READ,),
    "GET /users": (_USER_READ,),
    "POST /users": (_USER_WRITE,),
    "GET /users/{id}": (_USER_READ,),
    "PATCH /users/{id}": (_USER_WRITE,),
    "DELETE /users/{id}": (_USER_DELETE,),
    "GET /users/{id}/authentication/fido2Methods": (_PASSKEY_LIST,),
    "GET /users/{id}/authentication/fido2Methods/{mid}": (_PASSKEY_GET,),
    "DELETE /users/{id}/authentication/fido2Methods/{mid}": (_PASSKEY_DELETE,),
    "GET /directory/deletedItems/{id}": (_USER_READ,),
    "POST /directory/deletedItems/{id}/restore": (_USER_DELETE,),
    "DELETE /directory/deletedItems/{id}": (_USER_DELETE,),
    "GET /groups": (_GROUP_READ,),
    "GET /groups/{id}": (_GROUP_READ,),
    "GET /servicePrincipals/{id}": (_APP_READ,),
    "GET /organization": (_ORG_READ,),
    "GET /policies/authenticationMethodsPolicy": (_METHODS_READ,),
    f"GET /{_FIDO2_CONFIGS}": (_METHODS_READ,),
    f"GET /{_FIDO2_CONFIGS}/{{cfg}}": (_METHODS_READ,),
    f"PATCH /{_FIDO2_CONFIGS}/{{cfg}}": (_METHODS_WRITE,),
    **_strength_routes(),
    "GET /identity/conditionalAccess/policies": (_CA_READ,),
    "POST /identity/conditionalAccess/policies": _CA_WRITE,
    "GET /identity/conditionalAccess/policies/{id}": (_CA_READ,),
    "PATCH /identity/conditionalAccess/policies/{id}": _CA_WRITE,
    "DELETE /identity/conditionalAccess/policies/{id}": _CA_WRITE,
    "GET /subscriptions": (_SUBSCRIPTION,),
    "POST /subscriptions": (_SUBSCRIPTION,),
    "GET /subscriptions/{id}": (_SUBSCRIPTION,),
    "PATCH /subscriptions/{id}": (_SUBSCRIPTION,),
    "DELETE /subscriptions/{id}": (_SUBSCRIPTION,),
    "POST /subscriptions/{id}/reauthorize": (_SUBSCRIPTION,),
    "GET /reports/authenticationMethods/userRegistrationDetails": (_REPORTS_READ,),
    "GET /reports/authenticationMethods/userRegistrationDetails/{id}": (_REPORTS_READ,),
}
#: CA writes whose body, when it names an application id, also needs Application.Read.All.
_CA_BODY_ROUTES = ("POST /identity/conditionalAccess/policies", "PATCH /identity/conditionalAccess/policies/{id}")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def token_grants(token: str) -> frozenset[str] | None:
    """The permissions a JWT grants (`roles` and `scp`, unverified); None when `token` is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict):
        return None
    roles, scopes = claims.get("roles"), claims.get("scp")
    granted = {r for r in roles if isinstance(r, str)} if isinstance(roles, list) else set()
    if isinstance(scopes, str):
        granted |= set(scopes.split())
    return frozenset(granted)


def names_applications(body: Any) -> bool:
    """True when a CA policy body's `conditions.applications` names an application by id (not a keyword)."""
    conditions = body.get("conditions") if isinstance(body, Mapping) else None
    apps = conditions.get("applications") if isinstance(conditions, Mapping) else None
    if not isinstance(apps, Mapping):
        return False
    values = [*(apps.get("includeApplications") or []), *(apps.get("excludeApplications") or [])]
    return any(isinstance(v, str) and _GUID.match(v) for v in values)


def requirement(route: str, body: Callable[[], Any] = lambda: None) -> Requirement:
    """The requirement of `route` (its name), with Application.Read.All added for a CA body naming apps
    (`body` is called only for those routes; it returns the request's JSON, or None when it has none)."""
    need = ROUTE_ROLES[route]
    if route in _CA_BODY_ROUTES and names_applications(body()):
        need = (*need, (APPLICATION_READ,))
    return need


def unmet(need: Requirement, granted: Iterable[str] | None, *, application_read: bool = True) -> list[str]:
    """The least-privileged role of each clause no granted role meets; [] when the call may go on.

    `granted` None means every permission (an opaque token under `opaque_token_roles` "all");
    `application_read` False withholds Application.Read.All (and what stands in for it) whatever is granted.
    """
    have = None if granted is None else set(granted)
    if have is not None:  # ReadWrite implies Read for the same resource, as on Graph
        have |= {role.replace(".ReadWrite.", ".Read.", 1) for role in have if ".ReadWrite." in role}
    missing = []
    for clause in need:
        if not application_read and APPLICATION_READ in clause:
            missing.append(clause[0])
        elif have is not None and not have & set(clause):
            missing.append(clause[0])
    return missing


def check(route: str, grants: frozenset[str] | None, body: Callable[[], Any], *, opaque_roles: str,
          application_read: bool) -> None:
    """Raise Graph's 403 unless the token's `grants` (`token_grants`; None for an opaque token) meet what
    `route` needs (see the module docstring)."""
    if grants is None and opaque_roles == "none":
        grants = frozenset()
    if unmet(requirement(route, body), grants, application_read=application_read):
        raise GraphApiError(403, DENIED_CODE, DENIED_MESSAGE)
