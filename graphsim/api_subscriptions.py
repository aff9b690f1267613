"""`/subscriptions` for users: create with the validation handshake, list, get, renew, reauthorize, delete.

Rules from Graph's documentation: `changeType` from created/updated/deleted (users report creations as
`updated`, so `created` never fires), `resource` `users` or `users/{id}`, expiry at most 41,760 minutes
ahead (400 beyond) and raised to 45 minutes when shorter, `clientState` at most 128 characters,
`lifecycleNotificationUrl` settable only at creation, 100 subscriptions per app (403) and 409 for a
duplicate. Expiry is measured on the simulator's clock; `reauthorizationRequired` challenges before expiry
and the pause of an unanswered one are `graphsim.reauth`'s. `notificationUrl` must be https; the
simulator also takes http on loopback and refuses any non-loopback host, since it never contacts anything
but 127.0.0.1.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from graphsim.clock import parse_graph_time
from graphsim.errors import GraphApiError, bad_request
from graphsim.notify import LOOPBACK_HOSTS
from graphsim.routing import SimRequest, SimResponse

if TYPE_CHECKING:
    from graphsim.app import SimServer

MAX_MINUTES = 41_760
MIN_MINUTES = 45
CHANGE_TYPES = ("created", "updated", "deleted")
_CREATE_FIELDS = {"changeType", "notificationUrl", "resource", "expirationDateTime", "clientState",
                  "lifecycleNotificationUrl", "includeResourceData", "latestSupportedTlsVersion",
                  "encryptionCertificate", "encryptionCertificateId", "notificationUrlAppId"}


def _format(stamp: datetime) -> str:
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _expiry(value: Any, now: datetime) -> str:
    if not isinstance(value, str):
        raise bad_request("expirationDateTime is required.")
    try:
        stamp = parse_graph_time(value)
    except ValueError:
        raise bad_request(f"Cannot convert '{value}' to a DateTimeOffset.") from None
    if stamp <= now:
        raise bad_request("Subscription expiration can only be in the future.")
    if stamp > now + timedelta(minutes=MAX_MINUTES):
        raise bad_request(f"Subscription expiration can only be {MAX_MINUTES} minutes in the future.")
    return _format(max(stamp, now + timedelta(minutes=MIN_MINUTES)))


def _check_url(name: str, url: Any) -> str:
    if not isinstance(url, str) or not url:
        raise bad_request(f"{name} is required.")
    if url.lower().startswith("eventgrid:"):
        raise bad_request("Event Grid notification URLs are not simulated.")
    parts = urlsplit(url)
    loopback = (parts.hostname or "").lower() in LOOPBACK_HOSTS
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise GraphApiError(400, "ValidationError", f"The {name} must be an absolute https URL.")
    if parts.scheme == "http" and not loopback:
        raise GraphApiError(400, "ValidationError", f"The {name} must use https.")
    if not loopback:
        raise GraphApiError(400, "ValidationError",
                            f"Subscription validation request failed for {name}: the simulator only calls loopback "
                            "hosts.")
    return url


def _resource(sim: SimServer, value: Any) -> str:
    if not isinstance(value, str):
        raise bad_request("resource is required.")
    parts = [p for p in value.strip().split("/") if p]
    if not parts or parts[0].lower() != "users" or len(parts) > 2 or "?" in value:
        raise bad_request(f"Resource '{value}' is not supported: use 'users' or 'users/{{id}}'.")
    if len(parts) == 2 and sim.store.user_by_key(parts[1]) is None:
        raise GraphApiError(404, "Request_ResourceNotFound", f"Resource '{parts[1]}' does not exist.")
    return value


def _change_type(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise bad_request("changeType is required.")
    parts = [p.strip() for p in value.split(",")]
    if any(p not in CHANGE_TYPES for p in parts) or len(set(parts)) != len(parts):
        raise bad_request(f"Invalid changeType '{value}': use created, updated, deleted.")
    return ",".join(parts)


def _live(sim: SimServer, req: SimRequest) -> list[dict[str, Any]]:
    now = sim.clock.utcnow()
    for sid, sub in list(sim.store.subscriptions.items()):
        if parse_graph_time(sub["expirationDateTime"]) <= now:
            del sim.store.subscriptions[sid]          # Graph removes expired subscriptions
    return [s for s in sim.store.subscriptions.values() if s["applicationId"] == req.app_id]


def _sub(sim: SimServer, req: SimRequest, sid: str) -> dict[str, Any]:
    for sub in _live(sim, req):
        if sub["id"].lower() == sid.lower():
            return sub
    raise GraphApiError(404, "ResourceNotFound", f"The object was not found: subscription '{sid}'.")


def _view(req: SimRequest, sub: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.context": f"{req.base}/$metadata#subscriptions/$entity", **sub}


async def create_subscription(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """POST /subscriptions: validate, run the handshake, 201."""
    body = req.json_object()
    unknown = [k for k in body if k not in _CREATE_FIELDS and not k.startswith("@odata.")]
    if unknown:
        raise bad_request(f"Property '{unknown[0]}' does not exist on type 'microsoft.graph.subscription'.")
    change_type = _change_type(body.get("changeType"))
    resource = _resource(sim, body.get("resource"))
    expiry = _expiry(body.get("expirationDateTime"), sim.clock.utcnow())
    url = _check_url("notificationUrl", body.get("notificationUrl"))
    lifecycle = body.get("lifecycleNotificationUrl")
    if lifecycle is not None:
        lifecycle = _check_url("lifecycleNotificationUrl", lifecycle)
    client_state = body.get("clientState")
    if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
        raise bad_request("clientState must be a string of at most 128 characters.")
    if body.get("includeResourceData"):
        raise bad_request("Rich notifications (includeResourceData) are not supported for users.")
    tls = body.get("latestSupportedTlsVersion", "v1_2")
    if tls not in ("v1_0", "v1_1", "v1_2", "v1_3"):
        raise bad_request(f"Invalid latestSupportedTlsVersion '{tls}'.")
    mine = _live(sim, req)
    if any(s["resource"].lower() == resource.lower() and s["changeType"] == change_type
           and s["notificationUrl"] == url for s in mine):
        raise GraphApiError(409, "Conflict", "A subscription for this resource, changeType and notificationUrl "
                            "already exists.")
    if len(mine) >= sim.config.subscription_quota_per_app:
        raise GraphApiError(403, "ExtensionError", "Subscription quota for this application and tenant exceeded.")
    for target in filter(None, (url, lifecycle)):
        if not await sim.notifier.validate(target):
            raise GraphApiError(400, "ValidationError",
                                "Subscription validation request failed. Notification endpoint must respond with "
                                "200 OK to validation request.")
    sub = {"id": str(uuid.uuid4()), "resource": resource, "applicationId": req.app_id, "changeType": change_type,
           "clientState": client_state, "notificationUrl": url, "notificationQueryOptions": None,
           "lifecycleNotificationUrl": lifecycle, "expirationDateTime": expiry, "creatorId": req.app_id,
           "includeResourceData": False, "latestSupportedTlsVersion": tls, "encryptionCertificate": None,
           "encryptionCertificateId": None, "notificationUrlAppId": None}
    sim.store.subscriptions[sub["id"]] = sub
    return SimResponse(201, _view(req, sub))


def list_subscriptions(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /subscriptions: the calling app's live subscriptions."""
    return SimResponse(200, {"@odata.context": f"{req.base}/$metadata#subscriptions",
                             "value": [dict(s) for s in _live(sim, req)]})


def get_subscription(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """GET /subscriptions/{id}."""
    return SimResponse(200, _view(req, _sub(sim, req, params["id"])))


def patch_subscription(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """PATCH /subscriptions/{id}: renew (expirationDateTime only); 200 with the subscription."""
    sub = _sub(sim, req, params["id"])
    body = req.json_object()
    other = [k for k in body if k != "expirationDateTime" and not k.startswith("@odata.")]
    if other:
        raise bad_request(f"Only expirationDateTime can be updated, not '{other[0]}'.")
    sub["expirationDateTime"] = _expiry(body.get("expirationDateTime"), sim.clock.utcnow())
    sim.notifier.reauth.answered(sub["id"])          # renewing also reauthorizes (lifecycle docs)
    return SimResponse(200, _view(req, sub))


def delete_subscription(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """DELETE /subscriptions/{id}: 204."""
    sub = _sub(sim, req, params["id"])
    del sim.store.subscriptions[sub["id"]]
    return SimResponse(204)


def reauthorize_subscription(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """POST /subscriptions/{id}/reauthorize: 204, expiry unchanged; a pending challenge is answered."""
    sub = _sub(sim, req, params["id"])
    sim.notifier.reauth.answered(sub["id"])
    return SimResponse(204)
