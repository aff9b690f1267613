"""Graph's webhooks: change notifications on users, lifecycle notifications, and the subscription handshake.

    parse_change_notifications    Graph webhook POST {"value": [...]}       -> NotificationBatch
    validation_token              Graph subscription handshake (query)       -> str | None
    parse_lifecycle_notifications Graph lifecycle POST {"value": [...]}      -> list[LifecycleEvent]

Pure. Every item is authenticated (``clientState`` in constant time, tenant) before anything else of it is
trusted; the batch rule is shared.upn.intake's.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.errors import InputError
from shared.upn.intake import (
    CHANGE_TYPES,
    CONTROL,
    MAX_BODY_BYTES,
    ChangeNotice,
    LifecycleEvent,
    NotificationBatch,
    Reject,
    Rejected,
    as_bytes,
    check_client_state,
    check_tenant,
    finish_batch,
    lifecycle_fields,
    optional_str,
    pick_user_id,
    require_secret,
    require_tenant,
    value_list,
)
from shared.web import parse_json

#: Graph's handshake token is opaque and about 100 characters; anything near this is not from Graph.
MAX_VALIDATION_TOKEN_CHARS = 2048


# --- change notifications -------------------------------------------------------------------


def parse_change_notifications(body: bytes, *, client_state: str, tenant_id: str) -> NotificationBatch:
    """Parse a Graph change-notification POST on ``users``.

    Every item's ``clientState`` is compared with ours in constant time and its tenant (``tenantId``
    and/or ``resourceData.organizationId``; all present must be ours) is checked before anything else
    of it is trusted. The user id comes from ``resourceData.id``, ``resourceData.@odata.id`` or the
    ``Users/<id>`` resource (all present must agree) and must be a GUID. See the module docstring for
    which failures drop an item and which raise.
    """
    secret = require_secret(client_state, "client_state")
    tenant = require_tenant(tenant_id)
    items = value_list(parse_json(as_bytes(body, "body"), limit=MAX_BODY_BYTES))

    accepted: list[ChangeNotice] = []
    rejected: list[Rejected] = []
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    for index, item in enumerate(items):
        path = f"value[{index}]"
        try:
            notice = _notification_item(item, path, secret, tenant)
        except Reject as refused:
            rejected.append(Rejected(index, refused.kind, refused.reason))
            continue
        key = (notice.user_id, notice.change_type)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        accepted.append(notice)
    finish_batch(accepted, rejected)
    return NotificationBatch(tuple(accepted), tuple(rejected), duplicates)


def _notification_item(item: Any, path: str, secret: str, tenant: str) -> ChangeNotice:
    if not isinstance(item, dict):
        raise Reject("invalid", f"{path}: expected an object")
    check_client_state(item, secret, path)
    raw_data = item.get("resourceData")
    data = raw_data if isinstance(raw_data, dict) else {}
    check_tenant((("tenantId", item.get("tenantId")),
                   ("resourceData.organizationId", data.get("organizationId"))), tenant, path)
    if raw_data is not None and not isinstance(raw_data, dict):
        raise Reject("invalid", f"{path}.resourceData: expected an object")

    change_type = item.get("changeType")
    if change_type is None:
        raise Reject("invalid", f"{path}.changeType: missing")
    if not isinstance(change_type, str) or change_type not in CHANGE_TYPES:
        raise Reject("invalid", f"{path}.changeType: expected one of {', '.join(sorted(CHANGE_TYPES))}")

    resource = optional_str(item, "resource", path)
    user_id = pick_user_id((("resourceData.id", data.get("id"), False),
                             ("resourceData.@odata.id", data.get("@odata.id"), True),
                             ("resource", resource, True)), path, "resourceData.id")
    subscription_id = optional_str(item, "subscriptionId", path)
    return ChangeNotice(user_id=user_id, change_type=change_type, subscription_id=subscription_id,
                        tenant_id=tenant, resource=resource or f"Users/{user_id}", source="notification")


def validation_token(params: Mapping[str, str]) -> str | None:
    """The subscription handshake token, or None when this request is not a handshake.

    Graph POSTs ``?validationToken=<opaque>`` to the notification and lifecycle URLs and wants it back
    within 10 s as ``text/plain``; the host has already URL-decoded it. The token is echoed, so it is
    bounded (MAX_VALIDATION_TOKEN_CHARS) and may not contain control characters.
    """
    token = params.get("validationToken")
    if token is None:
        return None
    if not isinstance(token, str):
        raise InputError("validationToken: expected a string")
    if not token:
        raise InputError("validationToken: empty")
    if len(token) > MAX_VALIDATION_TOKEN_CHARS:
        raise InputError(f"validationToken: longer than {MAX_VALIDATION_TOKEN_CHARS} characters")
    if CONTROL.search(token):
        raise InputError("validationToken: contains control characters")
    return token


# --- lifecycle notifications ----------------------------------------------------------------------


def parse_lifecycle_notifications(body: bytes, *, client_state: str, tenant_id: str) -> list[LifecycleEvent]:
    """Parse a Graph lifecycle-notification POST.

    Same authentication and batch rule as parse_change_notifications. ``reauthorizationRequired``,
    ``subscriptionRemoved`` and ``missed`` are recognised; any other name is kept as ``unknown`` (with
    ``raw_event``) so a new Graph event is logged rather than crashing the endpoint. Duplicates (same
    event and subscription) are returned once.
    """
    secret = require_secret(client_state, "client_state")
    tenant = require_tenant(tenant_id)
    items = value_list(parse_json(as_bytes(body, "body"), limit=MAX_BODY_BYTES))

    events: list[LifecycleEvent] = []
    rejected: list[Rejected] = []
    seen: set[tuple[str, str, str]] = set()
    for index, item in enumerate(items):
        path = f"value[{index}]"
        try:
            event = _lifecycle_item(item, path, secret, tenant)
        except Reject as refused:
            rejected.append(Rejected(index, refused.kind, refused.reason))
            continue
        key = (event.event, event.raw_event, event.subscription_id)
        if key not in seen:
            seen.add(key)
            events.append(event)
    finish_batch(events, rejected)
    return events


def _lifecycle_item(item: Any, path: str, secret: str, tenant: str) -> LifecycleEvent:
    if not isinstance(item, dict):
        raise Reject("invalid", f"{path}: expected an object")
    check_client_state(item, secret, path)
    data = item.get("resourceData")
    organization = data.get("organizationId") if isinstance(data, dict) else None
    check_tenant((("tenantId", item.get("tenantId")), ("resourceData.organizationId", organization)),
                  tenant, path)
    return lifecycle_fields(item, path, tenant, item.get("lifecycleEvent"), "lifecycleEvent", "notification")
