"""Users, deleted items, passkeys (fido2Methods) and groups.

`GET /users` pages with an opaque `$skiptoken` cursor over the append-only user order (or over the
`id eq`/`id in` candidates), so no page rescans earlier users. `endswith`, `ne` and `not` need Graph's
advanced query mode (`ConsistencyLevel: eventual` plus `$count=true`), as on Graph. Users on
`onPremisesSyncEnabled` keep their synced properties read-only.
"""
from __future__ import annotations

import base64
import copy
import json
import re
from typing import TYPE_CHECKING, Any

from graphsim.errors import GraphApiError, bad_request
from graphsim.odata import (
    candidate_ids,
    compile_filter,
    parse_filter,
    parse_select,
    parse_top,
    unsupported,
    uses_advanced,
)
from graphsim.routing import SimRequest, SimResponse
from graphsim.store import (
    GROUP_PROPERTIES,
    SYNCED_PROPERTIES,
    USER_PROPERTIES,
    USER_WRITABLE,
    User,
)

if TYPE_CHECKING:
    from graphsim.app import SimServer

USER_TYPE = "microsoft.graph.user"
_USER_BY_LOWER = {p.lower(): p for p in USER_PROPERTIES}
_LIST_UNSUPPORTED = ("$orderby", "$search", "$skip", "$expand")


def _token(doc: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode().rstrip("=")


def _untoken(raw: str) -> dict[str, Any]:
    try:
        doc = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if isinstance(doc, dict):
            return doc
    except ValueError:
        pass
    raise bad_request("Invalid $skiptoken.")


def resolve_user_property(name: str) -> str:
    """A user property name in its canonical case; 400 for names Graph doesn't have."""
    canon = _USER_BY_LOWER.get(name.lower())
    if canon is None:
        raise bad_request(f"Could not find a property named '{name}' on type '{USER_TYPE}'.")
    return canon


def _advanced(req: SimRequest) -> bool:
    return req.headers.get("consistencylevel", "").lower() == "eventual"


# ------------------------------------------------------------------ users
def list_users(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /users with $select, $filter, $top, $count and paging."""
    q = req.query
    for opt in _LIST_UNSUPPORTED:
        if opt in q:
            raise unsupported(f"The simulator does not support '{opt}' on /users.")
    if "$skiptoken" in q:
        state = _untoken(q["$skiptoken"])
    else:
        count = q.get("$count", "").lower()
        if count not in ("", "true", "false"):
            raise bad_request("$count must be true or false.")
        if count == "true" and not _advanced(req):
            raise unsupported("$count is not currently supported without the 'ConsistencyLevel: eventual' header.")
        state = {"s": parse_select(q.get("$select"), USER_PROPERTIES, USER_TYPE),
                 "f": q.get("$filter"), "t": parse_top(q.get("$top"), 999) or sim.config.users_page_size,
                 "c": 0, "n": count == "true"}
    predicate = None
    candidates: list[str] | None = None
    if state["f"]:
        node = parse_filter(state["f"])
        if "$skiptoken" not in q and uses_advanced(node) and not (_advanced(req) and state["n"]):
            raise unsupported("Operator 'endsWith'/'ne'/'not' is not supported because the required parameters "
                              "might be missing. Try adding $count=true query parameter and ConsistencyLevel:eventual "
                              "header. Refer to https://aka.ms/graph-docs/advanced-queries for more information")
        predicate = compile_filter(node, resolve_user_property)
        ids = candidate_ids(node)
        if ids is not None:
            candidates = sorted(ids)
    store = sim.store
    source: list[Any] = candidates if candidates is not None else store.user_order
    items: list[dict[str, Any]] = []
    cursor, n, top = state["c"], len(source), state["t"]
    while cursor < n and len(items) < top:
        entry = source[cursor]
        cursor += 1
        user = store.users.get(entry) if isinstance(entry, str) else entry
        if user is None or user.deleted or user.purged:
            continue
        if predicate is None or predicate(user.props):
            items.append(user.view(state["s"]))
    body: dict[str, Any] = {"@odata.context": f"{req.base}/$metadata#users" +
                            (f"({','.join(state['s'])})" if state["s"] else "")}
    if state["n"] and "$skiptoken" not in q:
        body["@odata.count"] = sum(1 for e in source if (u := store.users.get(e) if isinstance(e, str) else e)
                                   is not None and not u.deleted and not u.purged
                                   and (predicate is None or predicate(u.props)))
    body["value"] = items
    if cursor < n:
        body["@odata.nextLink"] = f"{req.base}/users?$skiptoken={_token({**state, 'c': cursor})}"
    return SimResponse(200, body)


def get_user(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /users/{id | userPrincipalName} with $select."""
    if "$expand" in req.query:
        raise unsupported("The simulator does not support $expand on users.")
    user = sim.store.require_user(params["id"])
    select = parse_select(req.query.get("$select"), USER_PROPERTIES, USER_TYPE)
    ctx = f"{req.base}/$metadata#users" + (f"({','.join(select)})" if select else "") + "/$entity"
    return SimResponse(200, {"@odata.context": ctx, **user.view(select)})


def _check_user_changes(sim: SimServer, body: dict[str, Any], user: User | None) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key, value in body.items():
        if key == "@odata.type":
            if str(value).lower() != "#microsoft.graph.user":
                raise bad_request(f"Invalid @odata.type '{value}' for a user.")
            continue
        canon = _USER_BY_LOWER.get(key.lower())
        if canon is None and key != "passwordProfile":
            raise bad_request(f"Property '{key}' does not exist on type '{USER_TYPE}'.")
        canon = canon or key
        if canon not in USER_WRITABLE:
            raise GraphApiError(400, "Request_BadRequest", f"Property '{canon}' is read-only and cannot be set.")
        changes[canon] = value
    if "accountEnabled" in changes and not isinstance(changes["accountEnabled"], bool):
        raise bad_request("accountEnabled must be a boolean.")
    if "displayName" in changes:
        name = changes["displayName"]
        if not isinstance(name, str) or not name.strip() or len(name) > 256:
            raise GraphApiError(400, "Request_BadRequest", "Invalid value specified for property 'displayName'.")
    if "userPrincipalName" in changes:
        _check_upn(sim, changes["userPrincipalName"])
    if "passwordProfile" in changes:
        profile = changes.pop("passwordProfile")   # write-only: accepted, never stored or returned
        if not isinstance(profile, dict) or not profile.get("password"):
            raise bad_request("passwordProfile.password is required.")
    if user is not None and user.props.get("onPremisesSyncEnabled") and SYNCED_PROPERTIES & set(changes):
        raise GraphApiError(400, "Request_BadRequest",
                            "Unable to update the specified properties for on-premises mastered Directory Sync "
                            "objects or objects currently undergoing migration.")
    return changes


def _check_upn(sim: SimServer, upn: Any) -> None:
    if not isinstance(upn, str) or upn.count("@") != 1 or " " in upn or upn.startswith("@") or upn.endswith("@"):
        raise GraphApiError(400, "Request_BadRequest", "Invalid value specified for property 'userPrincipalName'.")
    domains = sim.store.domains
    if domains is not None and upn.split("@")[1].lower() not in domains:
        raise GraphApiError(400, "Request_BadRequest",
                            "The domain portion of the userPrincipalName property is invalid. You must use one "
                            "of the verified domain names in your organization.")


def patch_user(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """PATCH /users/{id}: partial update, UPN unique, 204."""
    user = sim.store.require_user(params["id"])
    changes = _check_user_changes(sim, req.json_object(), user)
    sim.store.update_user(user, changes)
    return SimResponse(204)


def create_user(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """POST /users: the documented required properties, 201 with the new user."""
    body = req.json_object()
    missing = [k for k in ("accountEnabled", "displayName", "mailNickname", "passwordProfile", "userPrincipalName")
               if k not in body]
    if missing:
        raise GraphApiError(400, "Request_BadRequest",
                            f"Property '{missing[0]}' is required when creating the object.")
    changes = _check_user_changes(sim, body, None)
    user = sim.store.add_user(changes, record=True)
    return SimResponse(201, {"@odata.context": f"{req.base}/$metadata#users/$entity", **user.view(None)})


def delete_user(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """DELETE /users/{id}: soft delete (restorable from deleted items), 204."""
    user = sim.store.require_user(params["id"])
    sim.store.soft_delete_user(user)
    return SimResponse(204)


def _deleted_user(sim: SimServer, key: str) -> User:
    user = sim.store.users.get(key.lower())
    if user is None or not user.deleted:
        raise GraphApiError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist or one of its queried "
                            "reference-property objects are not present.")
    return user


def get_deleted_item(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /directory/deletedItems/{id} for a soft-deleted user."""
    user = _deleted_user(sim, params["id"])
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#directoryObjects/$entity",
                             "@odata.type": "#microsoft.graph.user", **user.view(None),
                             "deletedDateTime": user.props.get("deletedDateTime")})


def restore_deleted_item(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """POST /directory/deletedItems/{id}/restore."""
    user = _deleted_user(sim, params["id"])
    sim.store.restore_user(user)
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#directoryObjects/$entity",
                             "@odata.type": "#microsoft.graph.user", **user.view(None)})


def purge_deleted_item(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """DELETE /directory/deletedItems/{id}: permanent delete (notifications say `deleted`)."""
    sim.store.purge_user(_deleted_user(sim, params["id"]))
    return SimResponse(204)


# ------------------------------------------------------------------ passkeys
def list_fido2(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /users/{id}/authentication/fido2Methods."""
    user = sim.store.require_user(params["id"])
    return SimResponse(200, {
        "@odata.context": f"{req.base}/$metadata#users('{user.id}')/authentication/fido2Methods",
        "value": [dict(m) for m in user.fido2]})


def _method(sim: SimServer, params: dict[str, str]) -> tuple[User, dict[str, Any]]:
    user = sim.store.require_user(params["id"])
    for method in user.fido2:
        if method["id"] == params["mid"]:
            return user, method
    raise GraphApiError(404, "itemNotFound", f"The fido2 authentication method '{params['mid']}' was not found.")


def get_fido2(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /users/{id}/authentication/fido2Methods/{methodId}."""
    user, method = _method(sim, params)
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#users('{user.id}')/authentication/"
                                               "fido2Methods/$entity", **method})


def delete_fido2(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """DELETE /users/{id}/authentication/fido2Methods/{methodId}: 204."""
    user, method = _method(sim, params)
    user.fido2.remove(method)
    return SimResponse(204)


# ------------------------------------------------------------------ groups
def _group(sim: SimServer, key: str) -> dict[str, Any]:
    group = sim.store.groups.get(key.lower())
    if group is None:
        raise GraphApiError(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist or one of its queried "
                            "reference-property objects are not present.")
    return group


def _group_view(group: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    if select is None:
        return copy.deepcopy(group)
    return {name: copy.deepcopy(group.get(name)) for name in select}


def get_group(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /groups/{id} with $select."""
    group = _group(sim, params["id"])
    select = parse_select(req.query.get("$select"), GROUP_PROPERTIES, "microsoft.graph.group")
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#groups/$entity", **_group_view(group, select)})


def list_groups(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /groups with $select, $filter, $top and paging."""
    q = req.query
    if "$skiptoken" in q:
        state = _untoken(q["$skiptoken"])
    else:
        state = {"s": parse_select(q.get("$select"), GROUP_PROPERTIES, "microsoft.graph.group"),
                 "f": q.get("$filter"), "t": parse_top(q.get("$top"), 999) or sim.config.users_page_size, "c": 0}
    by_lower = {p.lower(): p for p in GROUP_PROPERTIES}

    def resolve(name: str) -> str:
        if name.lower() not in by_lower:
            raise bad_request(f"Could not find a property named '{name}' on type 'microsoft.graph.group'.")
        return by_lower[name.lower()]
    predicate = compile_filter(parse_filter(state["f"]), resolve) if state["f"] else None
    groups = [g for g in sim.store.groups.values() if predicate is None or predicate(g)]
    start, end = state["c"], state["c"] + state["t"]
    body: dict[str, Any] = {"@odata.context": f"{req.base}/$metadata#groups",
                            "value": [_group_view(g, state["s"]) for g in groups[start:end]]}
    if end < len(groups):
        body["@odata.nextLink"] = f"{req.base}/groups?$skiptoken={_token({**state, 'c': end})}"
    return SimResponse(200, body)


# ------------------------------------------------------------------ service principals
SERVICE_PRINCIPAL_PROPERTIES = (
    "id accountEnabled appDisplayName appId appOwnerOrganizationId appRoleAssignmentRequired description "
    "displayName homepage servicePrincipalNames servicePrincipalType tags").split()
_APP_ID_KEY = re.compile(r"^appId='(.*)'$", re.IGNORECASE)


def get_service_principal(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /servicePrincipals/{id} or /servicePrincipals(appId='{appId}') with $select (Graph's two key forms)."""
    key = params["id"]
    m = _APP_ID_KEY.match(key)
    if m:
        app_id = m.group(1).lower()
        sp = next((s for s in sim.store.service_principals.values() if str(s.get("appId")).lower() == app_id), None)
        shown = f"appId='{m.group(1)}'"
    else:
        sp, shown = sim.store.service_principals.get(key.lower()), key
    if sp is None:
        raise GraphApiError(404, "Request_ResourceNotFound", f"Resource '{shown}' does not exist or one of its "
                            "queried reference-property objects are not present.")
    select = parse_select(req.query.get("$select"), SERVICE_PRINCIPAL_PROPERTIES, "microsoft.graph.servicePrincipal")
    ctx = f"{req.base}/$metadata#servicePrincipals" + (f"({','.join(select)})" if select else "") + "/$entity"
    view = copy.deepcopy(sp) if select is None else {name: copy.deepcopy(sp.get(name)) for name in select}
    return SimResponse(200, {"@odata.context": ctx, **view})


ORGANIZATION_PROPERTIES = ("id", "displayName", "verifiedDomains")


def list_organization(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /organization: the one organization, whose id is the tenant id (what the app confirms first)."""
    domains = sim.store.domains or []
    org = {"id": sim.store.tenant_id, "displayName": "Simulated tenant",
           "verifiedDomains": [{"name": d, "isDefault": i == 0, "isInitial": False, "type": "Managed",
                                "capabilities": "None"} for i, d in enumerate(domains)]}
    select = parse_select(req.query.get("$select"), ORGANIZATION_PROPERTIES, "microsoft.graph.organization")
    view = {k: org[k] for k in select} if select is not None else org
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#organization", "value": [view]})
