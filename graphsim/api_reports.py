"""`/reports/authenticationMethods/userRegistrationDetails`: who registered which authentication methods.

Shapes and query support from Graph's documentation (userRegistrationDetails resource, List and Get):
list with `$filter` and `$orderby` only (any other option is a 400), paged by `@odata.nextLink`; get by user
id. Filterable: `methodsRegistered/any(m: m eq '…')` and `systemPreferredAuthenticationMethods/any(…)`,
the `is…` booleans with `eq`, `userPrincipalName`/`userDisplayName` with `eq` or `startswith`, `userType`
and `id` with `eq`, combined with `and`/`or`.

The simulator only knows passkeys, so `methodsRegistered` holds passkey names only, as Graph's current
names for them: `passKeyDeviceBoundAuthenticator` (device-bound, Microsoft Authenticator AAGUID),
`passKeyDeviceBound` (other device-bound keys) and `passKeySynced`. Never the older `fido2`: a client that
still filters on it finds nobody, which is the harsher reading.

Harder than convenient, each a knob:
- Freshness (`registration_report_refresh_s`, default one day): the report is a snapshot rebuilt every
  so often on the simulator's clock (first at start); `lastUpdatedDateTime` says when. Registrations,
  new users and deletions after the last refresh do not show. Graph publishes no refresh interval.
- Reports throttling (`reports_requests_per_10s`, default 5): Graph's documented limit for reports
  that list authentication methods, per app and tenant; beyond it a 429 with `Retry-After`.
- Page size (`registration_report_page_size`, default 100): unpublished; small pages mean more requests
  under the reports limit.

Permission: Graph requires `AuditLog.Read.All` (application) for both routes; graphsim/permissions.py
refuses other tokens with 403 before a handler runs.
"""
from __future__ import annotations

import base64
import json
import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from graphsim.errors import GraphApiError, bad_request
from graphsim.odata import Node, compile_filter, parse_filter, unsupported
from graphsim.routing import SimRequest, SimResponse
from graphsim.store import User
from graphsim.throttle import TokenBucket

if TYPE_CHECKING:
    from graphsim.app import SimServer

AUTHENTICATOR_AAGUIDS = frozenset({"de1e552d-db1d-4423-a619-566b625cdc84",    # Android
                                   "90a3ccdf-635c-4729-a248-9b709135078f"})   # iOS
BOOLEANS = ("isAdmin", "isMfaCapable", "isMfaRegistered", "isPasswordlessCapable", "isSsprCapable",
            "isSsprEnabled", "isSsprRegistered", "isSystemPreferredAuthenticationMethodEnabled")
_FILTERABLE = {**{name: ("eq",) for name in BOOLEANS}, "id": ("eq",), "userType": ("eq",),
               "userPrincipalName": ("eq", "startswith"), "userDisplayName": ("eq", "startswith"),
               "methodsRegistered": ("any_eq",), "systemPreferredAuthenticationMethods": ("any_eq",),
               "userPreferredMethodForSecondaryAuthentication": ("eq",)}
_ORDERABLE = ("userPrincipalName", "userDisplayName")
_ALLOWED_OPTIONS = ("$filter", "$orderby", "$skiptoken")


def methods_of(user: User) -> list[str]:
    """The user's registered methods in the report's vocabulary (passkeys only, in this simulator)."""
    names = set()
    for method in user.fido2:
        if method.get("passkeyType") == "synced":
            names.add("passKeySynced")
        elif str(method.get("aaGuid") or "").lower() in AUTHENTICATOR_AAGUIDS:
            names.add("passKeyDeviceBoundAuthenticator")
        else:
            names.add("passKeyDeviceBound")
    return sorted(names)


def registration_row(user: User, fido2_enabled: bool, stamp: str) -> dict[str, Any]:
    """One userRegistrationDetails object for `user` as of `stamp`."""
    methods = methods_of(user)
    return {"id": user.id, "userPrincipalName": user.upn, "userDisplayName": user.props.get("displayName"),
            "userType": "guest" if user.props.get("userType") == "Guest" else "member", "isAdmin": False,
            "isSsprRegistered": False, "isSsprEnabled": False, "isSsprCapable": False,
            "isMfaRegistered": bool(methods), "isMfaCapable": bool(methods) and fido2_enabled,
            "isPasswordlessCapable": bool(methods) and fido2_enabled,
            "isSystemPreferredAuthenticationMethodEnabled": True, "systemPreferredAuthenticationMethods": [],
            "userPreferredMethodForSecondaryAuthentication": "none", "methodsRegistered": methods,
            "lastUpdatedDateTime": stamp}


class RegistrationReport:
    """The report's snapshot (rebuilt once per refresh interval on the simulator's clock) and its limiter."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.by_id: dict[str, dict[str, Any]] = {}
        self.built: int | None = None              # the refresh number the snapshot belongs to
        self.buckets: dict[str, TokenBucket] = {}

    def current(self, sim: SimServer) -> list[dict[str, Any]]:
        """The rows as of the last refresh, rebuilding the snapshot when a refresh fell due."""
        interval = sim.config.registration_report_refresh_s
        elapsed = sim.clock.since_start()
        number = int(elapsed // interval) if interval > 0 else None
        if number is None or number != self.built:
            since_refresh = elapsed - number * interval if number is not None else 0.0
            stamp = (sim.clock.utcnow() - timedelta(seconds=since_refresh)).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
            enabled = sim.store.fido2_config.get("state") == "enabled"
            self.rows = [registration_row(u, enabled, stamp) for u in sim.store.user_order
                         if not (u.deleted or u.purged)]
            self.by_id = {r["id"].lower(): r for r in self.rows}
            self.built = number
        return self.rows

    def admit(self, sim: SimServer, req: SimRequest) -> None:
        """Graph's reports limit per app and tenant; raises its 429 when spent."""
        per_10s = sim.config.reports_requests_per_10s
        if per_10s <= 0 or not sim.config.throttle_enabled:
            return
        now, rate = sim.clock.now(), per_10s / 10.0
        bucket = self.buckets.get(req.app_id)
        if bucket is None:
            bucket = self.buckets[req.app_id] = TokenBucket(per_10s, now)
        bucket.refill(per_10s, rate, now)
        if bucket.level >= 1:
            bucket.level -= 1
            return
        sim.stats.throttled["reports"] += 1
        retry = max(1, math.ceil((1 - bucket.level) / rate))
        raise GraphApiError(429, "TooManyRequests", "Too many requests to reports. Retry after the time given "
                            "in the Retry-After header.",
                            headers={"Retry-After": str(retry),
                                     "x-ms-throttle-scope": f"Tenant_Application/Read/{req.app_id}/"
                                                            f"{sim.store.tenant_id}"})



def _check_filter(node: Node) -> None:
    """Only the operators Graph documents for each property; anything else is Graph's 400."""
    if node.op in ("and", "or"):
        for arg in node.args:
            _check_filter(arg)
        return
    path = str(node.args[0]) if node.args else ""
    name = _canonical(path)
    if name is None or node.op not in _FILTERABLE[name]:
        raise unsupported(f"Invalid filter clause: '{node.op}' on '{path}' is not supported by "
                          "userRegistrationDetails.")


def _canonical(path: str) -> str | None:
    return next((name for name in _FILTERABLE if name.lower() == path.lower()), None)


def _encode(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(token: str) -> dict[str, Any]:
    try:
        state = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(state, dict) or not isinstance(state.get("c"), int):
            raise ValueError
        return state
    except ValueError:
        raise bad_request("Badly formed skip token.") from None


def _selected(rows: list[dict[str, Any]], flt: str | None, orderby: str | None) -> list[dict[str, Any]]:
    out = rows
    if flt:
        node = parse_filter(flt)
        _check_filter(node)
        match = compile_filter(node, lambda p: _canonical(p) or p)
        out = [r for r in out if match(r)]
    if orderby:
        field, _, direction = orderby.strip().partition(" ")
        name = next((o for o in _ORDERABLE if o.lower() == field.lower()), None)
        if name is None or direction.strip().lower() not in ("", "asc", "desc"):
            raise unsupported(f"$orderby '{orderby}' is not supported: use userPrincipalName or userDisplayName.")
        out = sorted(out, key=lambda r: str(r.get(name) or "").lower(), reverse=direction.strip().lower() == "desc")
    return out


def list_registration_details(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /reports/authenticationMethods/userRegistrationDetails: one page of the report as of its last
    refresh, `$filter`/`$orderby` only. Needs AuditLog.Read.All (graphsim/permissions.py)."""
    sim.reports.admit(sim, req)
    other = [k for k in req.query if k.startswith("$") and k not in _ALLOWED_OPTIONS]
    if other:
        raise unsupported(f"The query option '{other[0]}' is not supported by userRegistrationDetails; "
                          "only $filter and $orderby are.")
    token = req.query.get("$skiptoken")
    state = _decode(token) if token else {"f": req.query.get("$filter"), "o": req.query.get("$orderby"), "c": 0}
    rows = _selected(sim.reports.current(sim), state["f"], state["o"])
    size = max(1, sim.config.registration_report_page_size)
    start = state["c"]
    body: dict[str, Any] = {"@odata.context": f"{req.base}/$metadata#reports/authenticationMethods/"
                                              "userRegistrationDetails",
                            "value": [dict(r) for r in rows[start:start + size]]}
    if start + size < len(rows):
        body["@odata.nextLink"] = (f"{req.base}/reports/authenticationMethods/userRegistrationDetails"
                                   f"?$skiptoken={_encode({**state, 'c': start + size})}")
    return SimResponse(200, body)


def get_registration_details(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET …/userRegistrationDetails/{id}: one user's row as of the last refresh (404 when the snapshot has
    none). Needs AuditLog.Read.All (graphsim/permissions.py)."""
    sim.reports.admit(sim, req)
    sim.reports.current(sim)
    row = sim.reports.by_id.get(params["id"].lower())
    if row is None:
        raise GraphApiError(404, "Request_ResourceNotFound", f"Resource '{params['id']}' does not exist.")
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#reports/authenticationMethods/"
                                               "userRegistrationDetails/$entity", **row})
