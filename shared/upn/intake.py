"""Intake parsers: raw bytes from the HTTP and Event Grid surfaces in, frozen dataclasses out.

Pure: no I/O, no SDK models, no logging of bodies. Each parser authenticates before it trusts a value
and says which field is wrong when it refuses something.

Surfaces and what they yield

    parse_change_notifications   Graph webhook POST {"value": [...]}        -> NotificationBatch
    validation_token             Graph subscription handshake (query)        -> str | None
    parse_lifecycle_notifications Graph lifecycle POST {"value": [...]}      -> list[LifecycleEvent]
    parse_event_grid_events      Graph partner events, CloudEvents 1.0       -> list[ChangeNotice]
    parse_event_grid_batch       the same, plus lifecycle events and rejections -> EventGridBatch
    event_grid_trigger_values    the trigger's func.CloudEvent (or EventGridEvent) -> plain values
    parse_event_grid_trigger     one trigger event, as those plain values    -> ChangeNotice | LifecycleEvent | None
    verify_ticket / sign_ticket  the ticketing webhook (HMAC-SHA256)         -> TicketEvent

Batch rule (notifications, lifecycle, Event Grid). One Graph POST can mix subscriptions and tenants, and a
non-2xx answer makes Graph retry the *whole* POST for up to 4 hours (and pushes the URL towards Graph's
slow/drop states), so one bad item must not sink the good ones:

* the envelope is wrong (not JSON, no ``value`` list, over MAX_BODY_BYTES) -> InputError / PayloadTooLarge;
* an item fails ``clientState`` or tenant -> dropped into ``rejected`` with kind ``auth``;
* an authentic item is malformed (e.g. ``value[3].resourceData.id: missing``) -> ``rejected``, kind ``invalid``;
* an item we do not handle (an Event Grid type that is not a user event) -> ``rejected``, kind ``ignored``;
* if **no** item is accepted and at least one was rejected as ``auth`` -> AuthError (401: nothing in the
  POST was ours); else if at least one was ``invalid`` -> InputError carrying the first reason (400).

Rejection reasons name the field and what is wrong; they never contain the secret, a received value or
the body, so callers may log them. Accepted items are de-duplicated within a batch.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from shared.errors import AuthError, ConfigError, InputError, PayloadTooLarge
from shared.ids import is_guid

#: The largest Graph notification or lifecycle POST we read (Graph publishes no maximum).
MAX_BODY_BYTES = 1024 * 1024
#: The largest ticket webhook body we read.
MAX_TICKET_BYTES = 64 * 1024
#: Graph's handshake token is opaque and about 100 characters; anything near this is not from Graph.
MAX_VALIDATION_TOKEN_CHARS = 2048
#: How far the ticket timestamp may be from our clock, in either direction.
TICKET_WINDOW = timedelta(minutes=5)
#: Idempotency keys from the ticket system: short, and safe as a Table Storage row key.
MAX_EVENT_ID_CHARS = 128
MAX_TICKET_ID_CHARS = 128
#: Longer than any Entra UPN (113 characters); only here to refuse garbage.
MAX_UPN_CHARS = 256

SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Timestamp"

CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})
TICKET_ACTIONS = frozenset({"upn_changed", "recheck_user", "verify_policy"})
#: Ticket actions that are about one user and so need ``userId`` or ``userPrincipalName``.
USER_TICKET_ACTIONS = frozenset({"upn_changed", "recheck_user"})
#: The ticket body's fields; anything else is refused by name (our own webhook: a typo must not pass silently).
TICKET_FIELDS = ("eventId", "action", "userId", "userPrincipalName", "oldUpn", "newUpn", "ticketId")

EVENT_GRID_USER_TYPES = {
    "microsoft.graph.userupdated": "updated",
    "microsoft.graph.userdeleted": "deleted",
}
EVENT_GRID_REAUTHORIZE_TYPE = "microsoft.graph.subscriptionreauthorizationrequired"

_USERS_PATH = re.compile(r"/?users/(?P<id>[^/()']+)|/?users\('(?P<quoted>[^/()']+)'\)", re.IGNORECASE)
#: Graph's CloudEvents ``source``: ``/tenants/{tenantId}/applications/{appId}``.
_SOURCE_TENANT = re.compile(r"/tenants/(?P<id>[^/]+)/applications/[^/]+", re.IGNORECASE)
_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]+")
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"sha256=(?P<hex>[0-9a-f]{64})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")

RejectKind = Literal["auth", "invalid", "ignored"]
TicketAction = Literal["upn_changed", "recheck_user", "verify_policy"]


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeNotice:
    """One "this user changed" signal. Carries only the id: the processor reads the user from Graph.

    ``user_id`` is a lower-case GUID, ``tenant_id`` lower-case, ``change_type`` one of CHANGE_TYPES.
    ``source`` says which surface it came through (``notification`` or ``eventgrid``); Event Grid adds
    its ``event_id`` and Graph's ``sequence_number`` when present.
    """

    user_id: str
    change_type: str
    subscription_id: str | None
    tenant_id: str
    resource: str
    source: str = "notification"
    event_id: str | None = None
    sequence_number: int | None = None


@dataclass(frozen=True)
class Rejected:
    """An item left out of a batch: its index in the input, why (naming the field), and the kind."""

    index: int
    kind: RejectKind
    reason: str


@dataclass(frozen=True)
class NotificationBatch:
    """The result of one Graph notification POST: accepted notices, rejected items, duplicates dropped."""

    accepted: tuple[ChangeNotice, ...] = ()
    rejected: tuple[Rejected, ...] = ()
    duplicates: int = 0

    @property
    def user_ids(self) -> list[str]:
        """Distinct accepted user ids, in arrival order (what goes on the queue)."""
        return list(dict.fromkeys(n.user_id for n in self.accepted))


@dataclass(frozen=True)
class LifecycleEvent:
    """A subscription lifecycle signal. ``event`` is one of LIFECYCLE_EVENTS or ``unknown``;
    ``raw_event`` keeps the name Graph sent (shortened, printable) so an unknown one can be logged."""

    event: str
    subscription_id: str
    tenant_id: str
    expiration: datetime | None = None
    raw_event: str = ""
    source: str = "notification"


@dataclass(frozen=True)
class EventGridBatch:
    """Everything one Event Grid delivery carried: user notices, lifecycle events, rejections."""

    notices: tuple[ChangeNotice, ...] = ()
    lifecycle: tuple[LifecycleEvent, ...] = ()
    rejected: tuple[Rejected, ...] = ()
    duplicates: int = 0


@dataclass(frozen=True)
class TicketEvent:
    """A verified ticket webhook call. ``user_id`` is a lower-case GUID; ``timestamp`` is the signed time."""

    event_id: str
    action: str
    timestamp: datetime
    user_id: str | None = None
    user_principal_name: str | None = None
    old_upn: str | None = None
    new_upn: str | None = None
    ticket_id: str | None = None


# --- shared helpers ------------------------------------------------------------------------------


class _Reject(Exception):
    """Internal: one item is refused; caught per item and turned into a Rejected."""

    def __init__(self, kind: RejectKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _as_bytes(body: bytes | bytearray | memoryview, what: str) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise InputError(f"{what}: expected bytes")


def _load_json(body: bytes, *, limit: int, what: str = "body") -> Any:
    """Decode a UTF-8 JSON body under a size limit; every failure is an InputError naming `what`."""
    if len(body) > limit:
        raise PayloadTooLarge(f"{what}: larger than {limit} bytes")
    if not body.strip():
        raise InputError(f"{what}: empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what}: not UTF-8") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise InputError(f"{what}: JSON nested too deeply") from None
    except ValueError:  # JSONDecodeError, NaN/Infinity, integers past the int-string limit
        raise InputError(f"{what}: not valid JSON") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _utf8(text: str) -> bytes:
    # JSON may carry lone surrogates ("\ud800"); surrogatepass keeps them comparable instead of raising.
    return text.encode("utf-8", "surrogatepass")


def _secret_matches(received: object, expected: str) -> bool:
    """Constant-time comparison of a received clientState with ours."""
    if not isinstance(received, str):
        return False
    return hmac.compare_digest(_utf8(received), _utf8(expected))


def _require_secret(value: str | None, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} is empty: refusing to accept unauthenticated input")
    return value


def _require_tenant(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise ConfigError("tenant_id is empty")
    return tenant_id.strip().lower()


def _user_id_from_path(text: str) -> str | None:
    """The id in ``Users/<id>``, ``/users/<id>`` or ``users('<id>')``; None when `text` is not such a path."""
    match = _USERS_PATH.fullmatch(text.strip())
    if match is None:
        return None
    return match.group("id") or match.group("quoted")


def _pick_user_id(candidates: Iterable[tuple[str, object, bool]], path: str, missing: str) -> str:
    """Agree on one user id from several places an item names it.

    Each candidate is (field, value, is_path). Absent (None) candidates are skipped; every present one
    must be a GUID and all must be equal; at least one must be present.
    """
    found: list[tuple[str, str]] = []
    for name, value, is_path in candidates:
        if value is None:
            continue
        where = f"{path}.{name}" if path else name
        if not isinstance(value, str):
            raise _Reject("invalid", f"{where}: expected a string")
        raw = _user_id_from_path(value) if is_path else value
        if raw is None:
            raise _Reject("invalid", f"{where}: expected Users/<id>")
        if not is_guid(raw):
            raise _Reject("invalid", f"{where}: user id is not a GUID")
        found.append((where, raw.lower()))
    if not found:
        raise _Reject("invalid", f"{path}.{missing}: missing")
    first_where, first = found[0]
    for where, value in found[1:]:
        if value != first:
            raise _Reject("invalid", f"{where}: does not match {first_where}")
    return first


def _check_tenant(claims: Sequence[tuple[str, object]], tenant: str, path: str) -> str:
    """Every tenant an item names must be ours, and it must name at least one."""
    seen = False
    for name, value in claims:
        if value is None:
            continue
        where = f"{path}.{name}"
        if not isinstance(value, str) or value.strip().lower() != tenant:
            raise _Reject("auth", f"{where}: not this tenant")
        seen = True
    if not seen:
        raise _Reject("auth", f"{path}.{claims[0][0]}: missing")
    return tenant


def _check_client_state(item: Mapping[str, Any], expected: str, path: str) -> None:
    received = item.get("clientState")
    if received is None:
        raise _Reject("auth", f"{path}.clientState: missing")
    if not _secret_matches(received, expected):
        raise _Reject("auth", f"{path}.clientState: does not match")


def _optional_str(item: Mapping[str, Any], key: str, path: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Reject("invalid", f"{path}.{key}: expected a string")
    return value


def _parse_datetime(text: str) -> datetime | None:
    """ISO 8601 as Graph writes it (``Z``, up to 7 fraction digits), as aware UTC; None if unparseable."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _printable(text: str, limit: int = 64) -> str:
    """A short, control-free rendering of a name we did not recognise, safe to log."""
    return _CONTROL.sub("?", text)[:limit]


def _value_list(data: Any) -> list[Any]:
    if not isinstance(data, dict):
        raise InputError("body: expected a JSON object")
    if "value" not in data:
        raise InputError("value: missing")
    items = data["value"]
    if not isinstance(items, list):
        raise InputError("value: expected a list")
    return items


def _finish(accepted: Sequence[object], rejected: Sequence[Rejected]) -> None:
    """The batch rule: raise only when nothing was accepted and something was refused."""
    if accepted:
        return
    refused = [r for r in rejected if r.kind == "auth"]
    if refused:
        # The message is the first reason (it names the field); no item passed clientState and tenant.
        raise AuthError(refused[0].reason, detail=[r.reason for r in refused][:10])
    invalid = [r for r in rejected if r.kind == "invalid"]
    if invalid:
        raise InputError(invalid[0].reason, detail=[r.reason for r in invalid][:10])


# --- Graph change notifications -------------------------------------------------------------------


def parse_change_notifications(body: bytes, *, client_state: str, tenant_id: str) -> NotificationBatch:
    """Parse a Graph change-notification POST on ``users``.

    Every item's ``clientState`` is compared with ours in constant time and its tenant (``tenantId``
    and/or ``resourceData.organizationId``; all present must be ours) is checked before anything else
    of it is trusted. The user id comes from ``resourceData.id``, ``resourceData.@odata.id`` or the
    ``Users/<id>`` resource (all present must agree) and must be a GUID. See the module docstring for
    which failures drop an item and which raise.
    """
    secret = _require_secret(client_state, "client_state")
    tenant = _require_tenant(tenant_id)
    items = _value_list(_load_json(_as_bytes(body, "body"), limit=MAX_BODY_BYTES))

    accepted: list[ChangeNotice] = []
    rejected: list[Rejected] = []
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    for index, item in enumerate(items):
        path = f"value[{index}]"
        try:
            notice = _notification_item(item, path, secret, tenant)
        except _Reject as refused:
            rejected.append(Rejected(index, refused.kind, refused.reason))
            continue
        key = (notice.user_id, notice.change_type)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        accepted.append(notice)
    _finish(accepted, rejected)
    return NotificationBatch(tuple(accepted), tuple(rejected), duplicates)


def _notification_item(item: Any, path: str, secret: str, tenant: str) -> ChangeNotice:
    if not isinstance(item, dict):
        raise _Reject("invalid", f"{path}: expected an object")
    _check_client_state(item, secret, path)
    raw_data = item.get("resourceData")
    data = raw_data if isinstance(raw_data, dict) else {}
    _check_tenant((("tenantId", item.get("tenantId")),
                   ("resourceData.organizationId", data.get("organizationId"))), tenant, path)
    if raw_data is not None and not isinstance(raw_data, dict):
        raise _Reject("invalid", f"{path}.resourceData: expected an object")

    change_type = item.get("changeType")
    if change_type is None:
        raise _Reject("invalid", f"{path}.changeType: missing")
    if not isinstance(change_type, str) or change_type not in CHANGE_TYPES:
        raise _Reject("invalid", f"{path}.changeType: expected one of {', '.join(sorted(CHANGE_TYPES))}")

    resource = _optional_str(item, "resource", path)
    user_id = _pick_user_id((("resourceData.id", data.get("id"), False),
                             ("resourceData.@odata.id", data.get("@odata.id"), True),
                             ("resource", resource, True)), path, "resourceData.id")
    subscription_id = _optional_str(item, "subscriptionId", path)
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
    if _CONTROL.search(token):
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
    secret = _require_secret(client_state, "client_state")
    tenant = _require_tenant(tenant_id)
    items = _value_list(_load_json(_as_bytes(body, "body"), limit=MAX_BODY_BYTES))

    events: list[LifecycleEvent] = []
    rejected: list[Rejected] = []
    seen: set[tuple[str, str, str]] = set()
    for index, item in enumerate(items):
        path = f"value[{index}]"
        try:
            event = _lifecycle_item(item, path, secret, tenant)
        except _Reject as refused:
            rejected.append(Rejected(index, refused.kind, refused.reason))
            continue
        key = (event.event, event.raw_event, event.subscription_id)
        if key not in seen:
            seen.add(key)
            events.append(event)
    _finish(events, rejected)
    return events


def _lifecycle_item(item: Any, path: str, secret: str, tenant: str) -> LifecycleEvent:
    if not isinstance(item, dict):
        raise _Reject("invalid", f"{path}: expected an object")
    _check_client_state(item, secret, path)
    data = item.get("resourceData")
    organization = data.get("organizationId") if isinstance(data, dict) else None
    _check_tenant((("tenantId", item.get("tenantId")), ("resourceData.organizationId", organization)),
                  tenant, path)
    return _lifecycle_fields(item, path, tenant, item.get("lifecycleEvent"), "lifecycleEvent", "notification")


def _lifecycle_fields(data: Mapping[str, Any], path: str, tenant: str, name: object, name_field: str,
                      source: str) -> LifecycleEvent:
    if name is None:
        raise _Reject("invalid", f"{path}.{name_field}: missing")
    if not isinstance(name, str):
        raise _Reject("invalid", f"{path}.{name_field}: expected a string")
    subscription_id = _optional_str(data, "subscriptionId", path)
    if not subscription_id:
        raise _Reject("invalid", f"{path}.subscriptionId: missing")
    expiration_text = _optional_str(data, "subscriptionExpirationDateTime", path)
    expiration = None
    if expiration_text is not None:
        expiration = _parse_datetime(expiration_text)
        if expiration is None:
            raise _Reject("invalid", f"{path}.subscriptionExpirationDateTime: not an ISO 8601 date-time")
    known = name if name in LIFECYCLE_EVENTS else "unknown"
    return LifecycleEvent(event=known, subscription_id=subscription_id, tenant_id=tenant,
                          expiration=expiration, raw_event=_printable(name), source=source)


# --- Event Grid partner events --------------------------------------------------------------------


def parse_event_grid_events(events: list[dict[str, Any]] | dict[str, Any], *, tenant_id: str,
                            client_state: str | None = None) -> list[ChangeNotice]:
    """The user notices in an Event Grid delivery of Graph partner events (CloudEvents 1.0).

    Lifecycle events (``SubscriptionReauthorizationRequired``) are not notices: use
    parse_event_grid_batch to get those too. Same authentication and batch rule as the webhook.
    """
    return list(parse_event_grid_batch(events, tenant_id=tenant_id, client_state=client_state).notices)


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
    tenant = _require_tenant(tenant_id)
    secret = None if client_state is None else _require_secret(client_state, "client_state")
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
        except _Reject as refused:
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
    _finish([*notices, *lifecycle], rejected)
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
        raise _Reject("invalid", f"{path}: expected an object")
    if item.get("specversion") != "1.0":
        raise _Reject("invalid", f"{path}.specversion: expected \"1.0\" (CloudEvents 1.0 schema)")
    event_id = item.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise _Reject("invalid", f"{path}.id: missing")
    event_type = item.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise _Reject("invalid", f"{path}.type: missing")
    kind = event_type.lower()
    if kind not in EVENT_GRID_USER_TYPES and kind != EVENT_GRID_REAUTHORIZE_TYPE:
        raise _Reject("ignored", f"{path}.type: not a Graph user event")
    data = item.get("data")
    if not isinstance(data, dict):
        raise _Reject("invalid", f"{path}.data: expected an object")
    data_path = f"{path}.data"

    if secret is not None:
        _check_client_state(data, secret, data_path)
    raw_resource_data = data.get("resourceData")
    resource_data = raw_resource_data if isinstance(raw_resource_data, dict) else {}
    _check_tenant((("data.tenantId", data.get("tenantId")),
                   ("data.resourceData.organizationId", resource_data.get("organizationId"))), tenant, path)
    if "source" in item:
        source = item["source"]
        match = _SOURCE_TENANT.fullmatch(source.strip()) if isinstance(source, str) else None
        if match is None:
            raise _Reject("auth", f"{path}.source: expected /tenants/<tenantId>/applications/<appId>")
        if match.group("id").lower() != tenant:
            raise _Reject("auth", f"{path}.source: not this tenant")
    if raw_resource_data is not None and not isinstance(raw_resource_data, dict):
        raise _Reject("invalid", f"{data_path}.resourceData: expected an object")

    if kind == EVENT_GRID_REAUTHORIZE_TYPE:
        return _lifecycle_fields(data, data_path, tenant, "reauthorizationRequired", "lifecycleEvent",
                                 "eventgrid")

    resource = _optional_str(data, "resource", data_path)
    user_id = _pick_user_id((("subject", item.get("subject"), True),
                             ("data.resourceData.id", resource_data.get("id"), False),
                             ("data.resource", resource, True)), path, "subject")
    sequence = resource_data.get("sequenceNumber")
    if sequence is not None:
        if isinstance(sequence, str) and sequence.isdigit() and len(sequence) <= 30:
            sequence = int(sequence)
        if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
            raise _Reject("invalid", f"{data_path}.resourceData.sequenceNumber: expected a whole number")
    subscription_id = _optional_str(data, "subscriptionId", data_path)
    return ChangeNotice(user_id=user_id, change_type=EVENT_GRID_USER_TYPES[kind], subscription_id=subscription_id,
                        tenant_id=tenant, resource=resource or f"Users/{user_id}", source="eventgrid",
                        event_id=event_id, sequence_number=sequence)


# --- ticket webhook -------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name; two spellings with different values are refused."""
    wanted = name.lower()
    values: list[str] = []
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == wanted:
            if not isinstance(value, str):
                raise AuthError(f"{name}: expected a string")
            values.append(value.strip())
    if not values:
        return None
    if len(set(values)) > 1:
        raise AuthError(f"{name}: sent more than once with different values")
    return values[0]


def _ticket_mac(secret: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(_utf8(secret), timestamp.encode("ascii") + b"." + body, hashlib.sha256).digest()


def sign_ticket(body: bytes, secret: str, timestamp: int | datetime) -> dict[str, str]:
    """The headers a ticket system sends with `body`: ``X-Timestamp`` and ``X-Signature``.

    `timestamp` is Unix seconds or an aware datetime (whole seconds are signed). See verify_ticket
    for the scheme; this is its reference implementation, for clients and tests.
    """
    secret = _require_secret(secret, "secret")
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise ValueError("timestamp must be timezone-aware")
        seconds = int(timestamp.timestamp())
    else:
        seconds = int(timestamp)
    if seconds < 0:
        raise ValueError("timestamp must not be before 1970")
    stamp = str(seconds)
    digest = _ticket_mac(secret, stamp, bytes(body)).hex()
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: f"sha256={digest}"}


def verify_ticket(body: bytes, headers: Mapping[str, str], *, secret: str, now: datetime,
                  window: timedelta = TICKET_WINDOW) -> TicketEvent:
    """Authenticate and parse one call of the ticketing webhook (``POST /api/tickets``).

    Signing scheme (Stripe-like; the ticket system must implement exactly this):

    * ``X-Timestamp: <t>`` where ``t`` is the current time as whole **Unix seconds** in decimal
      (e.g. ``1767225600``); no ISO 8601, no fractions.
    * ``X-Signature: sha256=<hex>`` where ``hex`` is the **lower-case** hex HMAC-SHA256 (64 digits), keyed
      with the UTF-8 shared secret (``TICKET_WEBHOOK_SECRET``), of the bytes ``f"{t}."`` followed by
      the **raw request body**, byte for byte as sent (sign after serialising; do not re-encode).
    * The signature covers the timestamp, so a captured request cannot be replayed with a fresh
      ``X-Timestamp``; ``t`` must be within `window` (default 5 minutes) of our clock in either
      direction. Within the window, ``eventId`` makes a replay harmless (the caller stores it).

    Example: ``t = str(int(time.time()))``;
    ``sig = hmac.new(secret, t.encode() + b"." + body, sha256).hexdigest()``.

    Order: size (PayloadTooLarge), then headers, signature and time (AuthError), and only then the
    body is parsed (InputError naming the field), so a bad signature is always a 401 whatever the body.
    Header names are case-insensitive.

    Body: ``{"eventId": str (1 to 128 of A-Z a-z 0-9 . _ : -), "action": "upn_changed" | "recheck_user" |
    "verify_policy", "userId"?: GUID, "userPrincipalName"?: str, "oldUpn"?: str, "newUpn"?: str,
    "ticketId"?: str}``; ``upn_changed`` and ``recheck_user`` need ``userId`` or ``userPrincipalName``.
    An unknown field is refused by name (400); ``null`` counts as absent.
    """
    secret = _require_secret(secret, "secret")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    raw = _as_bytes(body, "body")
    if len(raw) > MAX_TICKET_BYTES:
        raise PayloadTooLarge(f"body: larger than {MAX_TICKET_BYTES} bytes")

    stamp = _header(headers, TIMESTAMP_HEADER)
    if not stamp:
        raise AuthError(f"{TIMESTAMP_HEADER}: missing")
    if _UNIX_SECONDS.fullmatch(stamp) is None:
        raise AuthError(f"{TIMESTAMP_HEADER}: expected whole Unix seconds")
    signature = _header(headers, SIGNATURE_HEADER)
    if not signature:
        raise AuthError(f"{SIGNATURE_HEADER}: missing")
    match = _SIGNATURE.fullmatch(signature)
    if match is None:
        raise AuthError(f"{SIGNATURE_HEADER}: expected sha256=<64 lower-case hex digits>")
    if not hmac.compare_digest(bytes.fromhex(match.group("hex")), _ticket_mac(secret, stamp, raw)):
        raise AuthError(f"{SIGNATURE_HEADER}: does not match")
    # Compare as numbers: a 12-digit stamp can be past datetime's range.
    if abs(now.timestamp() - int(stamp)) > window.total_seconds():
        raise AuthError(f"{TIMESTAMP_HEADER}: outside the allowed window")
    signed_at = datetime.fromtimestamp(int(stamp), UTC)

    data = _load_json(raw, limit=MAX_TICKET_BYTES)
    if not isinstance(data, dict):
        raise InputError("body: expected a JSON object")
    return _ticket_fields(data, signed_at)


def _ticket_fields(data: Mapping[str, Any], signed_at: datetime) -> TicketEvent:
    for key in data:
        if key not in TICKET_FIELDS:
            what = (f"{key}: unknown field" if re.fullmatch(r"[A-Za-z][\w.@-]{0,63}", key)
                    else f"body: unknown field {_printable(key)!r}")
            raise InputError(f"{what}; expected only {', '.join(TICKET_FIELDS)}")
    event_id = _ticket_str(data, "eventId")
    if event_id is None:
        raise InputError("eventId: missing")
    if len(event_id) > MAX_EVENT_ID_CHARS:
        raise InputError(f"eventId: longer than {MAX_EVENT_ID_CHARS} characters")
    if _EVENT_ID.fullmatch(event_id) is None:
        raise InputError("eventId: only letters, digits and . _ : - are allowed")

    action = _ticket_str(data, "action")
    if action is None:
        raise InputError("action: missing")
    if action not in TICKET_ACTIONS:
        raise InputError(f"action: expected one of {', '.join(sorted(TICKET_ACTIONS))}")

    user_id = _ticket_str(data, "userId")
    if user_id is not None:
        if not is_guid(user_id):
            raise InputError("userId: expected a GUID (the user's object id)")
        user_id = user_id.lower()
    upn = _ticket_upn(data, "userPrincipalName")
    old_upn = _ticket_upn(data, "oldUpn")
    new_upn = _ticket_upn(data, "newUpn")
    if action in USER_TICKET_ACTIONS and user_id is None and upn is None:
        raise InputError(f"userId: required for action {action} (or give userPrincipalName)")

    ticket_id = _ticket_str(data, "ticketId")
    if ticket_id is not None:
        if len(ticket_id) > MAX_TICKET_ID_CHARS:
            raise InputError(f"ticketId: longer than {MAX_TICKET_ID_CHARS} characters")
        if _CONTROL.search(ticket_id):
            raise InputError("ticketId: contains control characters")
    return TicketEvent(event_id=event_id, action=action, timestamp=signed_at, user_id=user_id,
                       user_principal_name=upn, old_upn=old_upn, new_upn=new_upn, ticket_id=ticket_id)


def _ticket_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{key}: expected a string")
    if not value.strip():
        raise InputError(f"{key}: empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") in the JSON: it can be neither stored nor sent
        raise InputError(f"{key}: not valid Unicode text") from None
    return value


def _ticket_upn(data: Mapping[str, Any], key: str) -> str | None:
    value = _ticket_str(data, key)
    if value is None:
        return None
    if len(value) > MAX_UPN_CHARS:
        raise InputError(f"{key}: longer than {MAX_UPN_CHARS} characters")
    local, at, domain = value.partition("@")
    if not at or not local or not domain or "@" in domain or _WHITESPACE_OR_CONTROL.search(value):
        raise InputError(f"{key}: expected a user principal name (name@domain)")
    return value


__all__ = [
    "CHANGE_TYPES", "LIFECYCLE_EVENTS", "MAX_BODY_BYTES", "MAX_TICKET_BYTES", "MAX_VALIDATION_TOKEN_CHARS",
    "SIGNATURE_HEADER", "TICKET_ACTIONS", "TICKET_WINDOW", "TIMESTAMP_HEADER", "ChangeNotice", "EventGridBatch",
    "LifecycleEvent", "NotificationBatch", "Rejected", "TicketEvent", "event_grid_trigger_values", "is_guid",
    "parse_change_notifications",
    "parse_event_grid_batch", "parse_event_grid_events", "parse_event_grid_trigger",
    "parse_lifecycle_notifications", "sign_ticket", "validation_token", "verify_ticket",
]
