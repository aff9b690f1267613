"""Intake: what every surface that tells us about users yields, and the rule for a batch of items.

Pure: no I/O, no SDK models, no logging of bodies. The parsers live by source, each authenticating before
it trusts a value and saying which field is wrong when it refuses something:

    shared.upn.graph_notifications   Graph webhook POSTs (change notifications, lifecycle) and the handshake
    shared.upn.event_grid_events     Graph partner events through Event Grid (CloudEvents 1.0), and the trigger
    shared.upn.ticket_webhook        the ticketing webhook (HMAC-SHA256), its body read by shared.schemas.tickets

Here: their results (ChangeNotice, LifecycleEvent, Rejected, the batches) and the checks they share.

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

import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from shared.errors import AuthError, ConfigError, InputError
from shared.ids import is_guid

#: The largest Graph notification or lifecycle POST we read (Graph publishes no maximum).
MAX_BODY_BYTES = 1024 * 1024

CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "subscriptionRemoved", "missed"})

_USERS_PATH = re.compile(r"/?users/(?P<id>[^/()']+)|/?users\('(?P<quoted>[^/()']+)'\)", re.IGNORECASE)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

RejectKind = Literal["auth", "invalid", "ignored"]


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


# --- the batch rule and the checks every surface shares -------------------------------------------


class Reject(Exception):
    """Internal: one item is refused; caught per item and turned into a Rejected."""

    def __init__(self, kind: RejectKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def as_bytes(body: bytes | bytearray | memoryview, what: str) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise InputError(f"{what}: expected bytes")


def utf8(text: str) -> bytes:
    # JSON may carry lone surrogates ("\ud800"); surrogatepass keeps them comparable instead of raising.
    return text.encode("utf-8", "surrogatepass")


def secret_matches(received: object, expected: str) -> bool:
    """Constant-time comparison of a received clientState with ours."""
    if not isinstance(received, str):
        return False
    return hmac.compare_digest(utf8(received), utf8(expected))


def require_secret(value: str | None, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} is empty: refusing to accept unauthenticated input")
    return value


def require_tenant(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise ConfigError("tenant_id is empty")
    return tenant_id.strip().lower()


def _user_id_from_path(text: str) -> str | None:
    """The id in ``Users/<id>``, ``/users/<id>`` or ``users('<id>')``; None when `text` is not such a path."""
    match = _USERS_PATH.fullmatch(text.strip())
    if match is None:
        return None
    return match.group("id") or match.group("quoted")


def pick_user_id(candidates: Iterable[tuple[str, object, bool]], path: str, missing: str) -> str:
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
            raise Reject("invalid", f"{where}: expected a string")
        raw = _user_id_from_path(value) if is_path else value
        if raw is None:
            raise Reject("invalid", f"{where}: expected Users/<id>")
        if not is_guid(raw):
            raise Reject("invalid", f"{where}: user id is not a GUID")
        found.append((where, raw.lower()))
    if not found:
        raise Reject("invalid", f"{path}.{missing}: missing")
    first_where, first = found[0]
    for where, value in found[1:]:
        if value != first:
            raise Reject("invalid", f"{where}: does not match {first_where}")
    return first


def check_tenant(claims: Sequence[tuple[str, object]], tenant: str, path: str) -> str:
    """Every tenant an item names must be ours, and it must name at least one."""
    seen = False
    for name, value in claims:
        if value is None:
            continue
        where = f"{path}.{name}"
        if not isinstance(value, str) or value.strip().lower() != tenant:
            raise Reject("auth", f"{where}: not this tenant")
        seen = True
    if not seen:
        raise Reject("auth", f"{path}.{claims[0][0]}: missing")
    return tenant


def check_client_state(item: Mapping[str, Any], expected: str, path: str) -> None:
    received = item.get("clientState")
    if received is None:
        raise Reject("auth", f"{path}.clientState: missing")
    if not secret_matches(received, expected):
        raise Reject("auth", f"{path}.clientState: does not match")


def optional_str(item: Mapping[str, Any], key: str, path: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Reject("invalid", f"{path}.{key}: expected a string")
    return value


def parse_datetime(text: str) -> datetime | None:
    """ISO 8601 as Graph writes it (``Z``, up to 7 fraction digits), as aware UTC; None if unparseable."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def printable(text: str, limit: int = 64) -> str:
    """A short, control-free rendering of a name we did not recognise, safe to log."""
    return CONTROL.sub("?", text)[:limit]


def value_list(data: Any) -> list[Any]:
    if not isinstance(data, dict):
        raise InputError("body: expected a JSON object")
    if "value" not in data:
        raise InputError("value: missing")
    items = data["value"]
    if not isinstance(items, list):
        raise InputError("value: expected a list")
    return items


def finish_batch(accepted: Sequence[object], rejected: Sequence[Rejected]) -> None:
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


def lifecycle_fields(data: Mapping[str, Any], path: str, tenant: str, name: object, name_field: str,
                     source: str) -> LifecycleEvent:
    """A LifecycleEvent from a notification item or an Event Grid event's data (`name`: the event's name)."""
    if name is None:
        raise Reject("invalid", f"{path}.{name_field}: missing")
    if not isinstance(name, str):
        raise Reject("invalid", f"{path}.{name_field}: expected a string")
    subscription_id = optional_str(data, "subscriptionId", path)
    if not subscription_id:
        raise Reject("invalid", f"{path}.subscriptionId: missing")
    expiration_text = optional_str(data, "subscriptionExpirationDateTime", path)
    expiration = None
    if expiration_text is not None:
        expiration = parse_datetime(expiration_text)
        if expiration is None:
            raise Reject("invalid", f"{path}.subscriptionExpirationDateTime: not an ISO 8601 date-time")
    known = name if name in LIFECYCLE_EVENTS else "unknown"
    return LifecycleEvent(event=known, subscription_id=subscription_id, tenant_id=tenant,
                          expiration=expiration, raw_event=printable(name), source=source)
