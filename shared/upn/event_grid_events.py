"""Graph partner events delivered through Event Grid (CloudEvents 1.0), and the Functions trigger's event.

    parse_event_grid_batch       Graph partner events, CloudEvents 1.0       -> EventGridBatch
    event_grid_trigger_values    the trigger's func.CloudEvent (or EventGridEvent) -> plain values
    parse_event_grid_trigger     one trigger event, as those plain values    -> ChangeNotice | LifecycleEvent | None

Pure; the batch rule is shared.upn.intake's.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from shared.errors import InputError
from shared.upn.intake import (
    ChangeNotice,
    EventGridBatch,
    LifecycleEvent,
    Reject,
    Rejected,
    check_client_state,
    check_tenant,
    finish_batch,
    lifecycle_fields,
    optional_str,
    pick_user_id,
    require_secret,
    require_tenant,
)

EVENT_GRID_USER_TYPES = {
    "microsoft.graph.userupdated": "updated",
    "microsoft.graph.userdeleted": "deleted",
}
EVENT_GRID_REAUTHORIZE_TYPE = "microsoft.graph.subscriptionreauthorizationrequired"
#: Graph's CloudEvents ``source``: ``/tenants/{tenantId}/applications/{appId}``.
_SOURCE_TENANT = re.compile(r"/tenants/(?P<id>[^/]+)/applications/[^/]+", re.IGNORECASE)


# --- Event Grid partner events --------------------------------------------------------------------


def parse_event_grid_batch(events: list[dict[str, Any]] | dict[str, Any], *, tenant_id: str,
                           client_state: str | None = None) -> EventGridBatch:
    """Parse Graph events delivered through an Event Grid partner topic in the CloudEvents 1.0 schema.

    Each event needs ``specversion`` "1.0", an ``id``, a ``type`` and an object ``data`` (the Graph
    notification fields). Types: ``Microsoft.Graph.UserUpdated`` / ``UserDeleted`` yield ChangeNotices
    (user id from ``subject: Users/<id>``, ``data.resourceData.id`` and ``data.resource``, which must
    agree), ``Microsoft.Graph.SubscriptionReauthorizationRequired`` a LifecycleEvent; any other type is
    rejected as ``ignored``. The trigger path has no handshake, so the tenant is always checked, in ``data``
    (``data.tenantId`` and/or ``data.resourceData.organizationId``: all present must be ours, one must be
    present) and in a ``source`` when there is one (``/tenants/{tenantId}/applications/{appId}``, our
    tenant), and ``data.clientState`` too when `client_state` is given.
    """
    tenant = require_tenant(tenant_id)
    secret = None if client_state is None else require_secret(client_state, "client_state")
    if isinstance(events, dict):
        items: list[Any] = [events]
        label = "event"
    elif isinstance(events, list):
        items, label = events, "events"
    else:
        raise InputError("events: expected a list or an object")

    notices: list[ChangeNotice] = []
    lifecycle: list[LifecycleEvent] = []
    rejected: list[Rejected] = []
    seen: set[tuple[str, ...]] = set()
    duplicates = 0
    for index, item in enumerate(items):
        path = label if isinstance(events, dict) else f"{label}[{index}]"
        try:
            result = _event_grid_item(item, path, tenant, secret)
        except Reject as refused:
            rejected.append(Rejected(index, refused.kind, refused.reason))
            continue
        if isinstance(result, ChangeNotice):
            key: tuple[str, ...] = ("notice", result.user_id, result.change_type)
        else:
            key = ("lifecycle", result.event, result.subscription_id)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        (notices if isinstance(result, ChangeNotice) else lifecycle).append(result)  # type: ignore[arg-type]
    finish_batch([*notices, *lifecycle], rejected)
    return EventGridBatch(tuple(notices), tuple(lifecycle), tuple(rejected), duplicates)


def event_grid_trigger_values(event: Any) -> dict[str, Any]:
    """The plain values of the event the Functions Event Grid trigger hands over, for parse_event_grid_trigger.

    azure-functions decodes a CloudEvents 1.0 delivery (Graph's partner events are CloudEvents) into
    ``func.CloudEvent`` (``type``, ``source``; it has no ``event_type``), and an Event Grid schema one into
    ``func.EventGridEvent`` (``event_type``, ``topic``, no ``source``); both are read here, by their attributes.
    """
    if hasattr(event, "event_type"):  # func.EventGridEvent: its topic is an Azure resource id, not the tenant
        return {"event_id": event.id, "subject": event.subject, "event_type": event.event_type,
                "data": event.get_json(), "source": None, "cloud_event": False}
    return {"event_id": event.id, "subject": event.subject, "event_type": event.type, "data": event.get_json(),
            "source": event.source, "cloud_event": True}


def parse_event_grid_trigger(*, event_id: str, subject: str | None, event_type: str,
                             data: Mapping[str, Any] | None, tenant_id: str, client_state: str | None = None,
                             source: str | None = None, cloud_event: bool = False
                             ) -> ChangeNotice | LifecycleEvent | None:
    """One event as the Functions Event Grid trigger hands it over (see event_grid_trigger_values), passed
    as plain values so this stays pure. A CloudEvent (`cloud_event`) must carry a ``source`` naming our tenant.

    Returns the notice or lifecycle event, or None for a type we ignore. Raises AuthError or InputError
    (naming the field) when the event is not ours or is malformed.
    """
    envelope: dict[str, Any] = {"specversion": "1.0", "id": event_id, "type": event_type, "subject": subject,
                                "data": dict(data) if isinstance(data, Mapping) else data}
    if source is not None or cloud_event:
        envelope["source"] = source
    batch = parse_event_grid_batch(envelope, tenant_id=tenant_id, client_state=client_state)
    if batch.notices:
        return batch.notices[0]
    if batch.lifecycle:
        return batch.lifecycle[0]
    return None


def _event_grid_item(item: Any, path: str, tenant: str, secret: str | None) -> ChangeNotice | LifecycleEvent:
    if not isinstance(item, dict):
        raise Reject("invalid", f"{path}: expected an object")
    if item.get("specversion") != "1.0":
        raise Reject("invalid", f"{path}.specversion: expected \"1.0\" (CloudEvents 1.0 schema)")
    event_id = item.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise Reject("invalid", f"{path}.id: missing")
    event_type = item.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise Reject("invalid", f"{path}.type: missing")
    kind = event_type.lower()
    if kind not in EVENT_GRID_USER_TYPES and kind != EVENT_GRID_REAUTHORIZE_TYPE:
        raise Reject("ignored", f"{path}.type: not a Graph user event")
    data = item.get("data")
    if not isinstance(data, dict):
        raise Reject("invalid", f"{path}.data: expected an object")
    data_path = f"{path}.data"

    if secret is not None:
        check_client_state(data, secret, data_path)
    raw_resource_data = data.get("resourceData")
    resource_data = raw_resource_data if isinstance(raw_resource_data, dict) else {}
    check_tenant((("data.tenantId", data.get("tenantId")),
                   ("data.resourceData.organizationId", resource_data.get("organizationId"))), tenant, path)
    if "source" in item:
        source = item["source"]
        match = _SOURCE_TENANT.fullmatch(source.strip()) if isinstance(source, str) else None
        if match is None:
            raise Reject("auth", f"{path}.source: expected /tenants/<tenantId>/applications/<appId>")
        if match.group("id").lower() != tenant:
            raise Reject("auth", f"{path}.source: not this tenant")
    if raw_resource_data is not None and not isinstance(raw_resource_data, dict):
        raise Reject("invalid", f"{data_path}.resourceData: expected an object")

    if kind == EVENT_GRID_REAUTHORIZE_TYPE:
        return lifecycle_fields(data, data_path, tenant, "reauthorizationRequired", "lifecycleEvent",
                                 "eventgrid")

    resource = optional_str(data, "resource", data_path)
    user_id = pick_user_id((("subject", item.get("subject"), True),
                             ("data.resourceData.id", resource_data.get("id"), False),
                             ("data.resource", resource, True)), path, "subject")
    sequence = resource_data.get("sequenceNumber")
    if sequence is not None:
        if isinstance(sequence, str) and sequence.isdigit() and len(sequence) <= 30:
            sequence = int(sequence)
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
            raise Reject("invalid", f"{data_path}.resourceData.sequenceNumber: expected a whole number")
    subscription_id = optional_str(data, "subscriptionId", data_path)
    return ChangeNotice(user_id=user_id, change_type=EVENT_GRID_USER_TYPES[kind], subscription_id=subscription_id,
                        tenant_id=tenant, resource=resource or f"Users/{user_id}", source="eventgrid",
                        event_id=event_id, sequence_number=sequence)
