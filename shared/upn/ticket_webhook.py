"""The ticketing system's webhook (``POST /api/tickets``): HMAC-SHA256 over the timestamp and the body.

    verify_ticket / sign_ticket  the signature scheme (verify_ticket's docstring), then the body -> TicketEvent

Pure. The body is read only once the signature and the time are good, into the model
`shared.schemas.tickets.TicketBody`, which names the field of every problem (``eventId: missing``).
"""
from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import AuthError, InputError, PayloadTooLarge
from shared.upn.intake import as_bytes, printable, require_secret, utf8
from shared.web import MAX_TICKET_BYTES, parse_json

#: How far the ticket timestamp may be from our clock, in either direction.
TICKET_WINDOW = timedelta(minutes=5)
SIGNATURE_HEADER = "X-Signature"
TIMESTAMP_HEADER = "X-Timestamp"

_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"sha256=(?P<hex>[0-9a-f]{64})")
_FIELD_NAME = re.compile(r"[A-Za-z][\w.@-]{0,63}")


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


# --- signature ----------------------------------------------------------------------------------


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
    return hmac.new(utf8(secret), timestamp.encode("ascii") + b"." + body, hashlib.sha256).digest()


def sign_ticket(body: bytes, secret: str, timestamp: int | datetime) -> dict[str, str]:
    """The headers a ticket system sends with `body`: ``X-Timestamp`` and ``X-Signature``.

    `timestamp` is Unix seconds or an aware datetime (whole seconds are signed). See verify_ticket
    for the scheme; this is its reference implementation, for clients and tests.
    """
    secret = require_secret(secret, "secret")
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
    secret = require_secret(secret, "secret")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    raw = as_bytes(body, "body")
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

    data = parse_json(raw, limit=MAX_TICKET_BYTES)
    if not isinstance(data, dict):
        raise InputError("body: expected a JSON object")
    return _ticket_event(data, signed_at)


# --- body ----------------------------------------------------------------------------------------------
def _ticket_event(data: dict[str, Any], signed_at: datetime) -> TicketEvent:
    """The body's fields as a TicketEvent; the first problem (an unknown field first) is the InputError."""
    from pydantic import ValidationError

    from shared.schemas.tickets import TicketBody

    try:
        body = TicketBody.model_validate(data)
    except ValidationError as exc:
        raise _body_error(exc) from None
    return TicketEvent(event_id=str(body.eventId), action=str(body.action), timestamp=signed_at,
                       user_id=body.userId, user_principal_name=body.userPrincipalName, old_upn=body.oldUpn,
                       new_upn=body.newUpn, ticket_id=body.ticketId)


def _body_error(error: Any) -> InputError:
    """The body's first problem as `"<field>: <problem>"`, an unknown field before anything else."""
    from shared.schemas.problems import problems_of
    from shared.schemas.tickets import TicketBody

    errors = error.errors()
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        key = str(unknown[0]["loc"][-1])
        what = f"{key}: unknown field" if _FIELD_NAME.fullmatch(key) else f"body: unknown field {printable(key)!r}"
        return InputError(f"{what}; expected only {', '.join(TicketBody.model_fields)}")
    first = problems_of(error)[0]
    problem = "missing" if errors[0]["type"] == "missing" else first["problem"]
    return InputError(f"{first['field']}: {problem}")
