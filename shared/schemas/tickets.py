"""The ticket webhook's payload (POST /api/tickets), read only after its signature is checked.

``{"eventId": str (1 to 128 of A-Z a-z 0-9 . _ : -), "action": "upn_changed" | "recheck_user" |
"verify_policy", "userId"?: GUID, "userPrincipalName"?: str, "oldUpn"?: str, "newUpn"?: str, "ticketId"?: str}``;
``upn_changed`` and ``recheck_user`` need ``userId`` or ``userPrincipalName``. ``null`` counts as absent.
Each problem names its field: ``eventId: missing``, ``userId: expected a GUID (the user's object id)``.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, TypeAlias

from pydantic import BeforeValidator, ConfigDict, WithJsonSchema, model_validator

from shared.ids import is_guid
from shared.schemas.base import StrictModel, drop_nulls
from shared.schemas.document import GUID_RE
from shared.schemas.problems import problem

MAX_EVENT_ID_CHARS = 128
MAX_TICKET_ID_CHARS = 128
#: Longer than any Entra UPN (113 characters); only here to refuse garbage.
MAX_UPN_CHARS = 256
TICKET_ACTIONS = frozenset({"upn_changed", "recheck_user", "verify_policy"})
#: Ticket actions that are about one user and so need ``userId`` or ``userPrincipalName``.
USER_TICKET_ACTIONS = frozenset({"upn_changed", "recheck_user"})

_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


def _text(value: object) -> str | None:
    """A non-blank string of valid Unicode, or None (absent)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise problem("expected a string")
    if not value.strip():
        raise problem("empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800") in the JSON: it can be neither stored nor sent
        raise problem("not valid Unicode text") from None
    return value


def _event_id(value: object) -> object:
    text = _text(value)
    if text is None:
        raise problem("missing")
    if len(text) > MAX_EVENT_ID_CHARS:
        raise problem(f"longer than {MAX_EVENT_ID_CHARS} characters")
    if _EVENT_ID.fullmatch(text) is None:
        raise problem("only letters, digits and . _ : - are allowed")
    return text


def _action(value: object) -> object:
    text = _text(value)
    if text is None:
        raise problem("missing")
    if text not in TICKET_ACTIONS:
        raise problem(f"expected one of {', '.join(sorted(TICKET_ACTIONS))}")
    return text


def _user_id(value: object) -> object:
    text = _text(value)
    if text is not None and not is_guid(text):
        raise problem("expected a GUID (the user's object id)")
    return None if text is None else text.lower()


def _upn(value: object) -> object:
    text = _text(value)
    if text is None:
        return None
    if len(text) > MAX_UPN_CHARS:
        raise problem(f"longer than {MAX_UPN_CHARS} characters")
    local, at, domain = text.partition("@")
    if not at or not local or not domain or "@" in domain or _WHITESPACE_OR_CONTROL.search(text):
        raise problem("expected a user principal name (name@domain)")
    return text


def _ticket_id(value: object) -> object:
    text = _text(value)
    if text is not None:
        if len(text) > MAX_TICKET_ID_CHARS:
            raise problem(f"longer than {MAX_TICKET_ID_CHARS} characters")
        if _CONTROL.search(text):
            raise problem("contains control characters")
    return text


def _string(**schema: Any) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", **schema})


EventId: TypeAlias = Annotated[str | None, BeforeValidator(_event_id),
                               _string(pattern=f"^[A-Za-z0-9._:-]{{1,{MAX_EVENT_ID_CHARS}}}$")]
Action: TypeAlias = Annotated[str | None, BeforeValidator(_action), _string(enum=sorted(TICKET_ACTIONS))]
UserId: TypeAlias = Annotated[str | None, BeforeValidator(_user_id), _string(pattern=f"^{GUID_RE}$")]
Upn: TypeAlias = Annotated[str | None, BeforeValidator(_upn), _string(maxLength=MAX_UPN_CHARS)]
TicketId: TypeAlias = Annotated[str | None, BeforeValidator(_ticket_id), _string(maxLength=MAX_TICKET_ID_CHARS)]


def _required_pair(schema: dict[str, Any]) -> None:
    drop_nulls(schema)
    schema["required"] = ["eventId", "action"]


class TicketBody(StrictModel):
    """upn_changed and recheck_user need userId or userPrincipalName; an unknown field or a wrong type is a 400
    naming it (checked after the signature, so a bad signature stays a 401)."""

    model_config = ConfigDict(json_schema_extra=lambda schema: _required_pair(schema))
    nulls_are_absent = True

    # Required, but a null says "missing" like an absent field: the validators decide, not pydantic's default.
    eventId: EventId
    action: Action
    userId: UserId = None
    userPrincipalName: Upn = None
    oldUpn: Upn = None
    newUpn: Upn = None
    ticketId: TicketId = None

    @model_validator(mode="after")
    def _user_named(self) -> TicketBody:
        if self.action in USER_TICKET_ACTIONS and self.userId is None and self.userPrincipalName is None:
            raise problem("required", at=[("userId", f"required for action {self.action} (or give "
                                                     "userPrincipalName)")])
        return self
