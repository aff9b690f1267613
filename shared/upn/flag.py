"""The flag record (one user's UPN-change case) and its JSON codec: what the flags table stores and
``GET /api/flags`` shows. What a flag becomes (detection, merging, tracking, cleanup) is decided in
`shared.upn.decide`; this module only says what a flag is and how it is written down.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from shared.errors import InputError

#: Where a detection came from (stored as the flag's ``source``).
SOURCES = ("notification", "sweep", "ticket", "eventgrid", "recheck")
#: A flag keeps at most this many history entries (the newest).
MAX_HISTORY = 20
#: Where a flag's old UPN came from (``oldUpnOrigin``): our own snapshot of Graph, or only a ticket's word.
OLD_UPN_ORIGINS = ("snapshot", "ticket")
#: ``removalApproval``: above the per-run cap a flag waits (``required``) until an administrator approves.
APPROVAL_REQUIRED, APPROVED = "required", "approved"
#: ``passkeyDetails``: whether the flag's pre-change passkeys have been read (a flag opened on the registration
#: report's word alone waits, ``pending``, for the slow lane to read them).
DETAILS_PENDING, DETAILS_COMPLETE = "pending", "complete"


class FlagStatus(StrEnum):
    """Where a UPN-change case stands; the diagram is in `shared.upn.decide`."""

    PENDING = "pending"
    REMOVED = "removed"
    RESOLVED = "resolved"
    DISMISSED = "dismissed"
    CLEARED = "cleared"

    @property
    def is_open(self) -> bool:
        """Open cases are the ones the tracker still watches."""
        return self in OPEN_STATUSES


OPEN_STATUSES = frozenset({FlagStatus.PENDING, FlagStatus.REMOVED})


def utc(value: datetime, name: str) -> datetime:
    """`value` in UTC; ValueError naming `name` for anything but an aware datetime."""
    if not isinstance(value, datetime):
        raise ValueError(f"{name} must be a datetime")
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class PasskeyRef:
    """What a flag remembers of a passkey: enough to recognise it and to show it to a person."""

    id: str
    aa_guid: str | None = None
    model: str | None = None
    created_date_time: str | None = None
    display_name: str | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a flag's history."""

    at: datetime
    status: FlagStatus
    note: str


@dataclass(frozen=True)
class Flag:
    """One user's UPN-change case. Tenant-agnostic: the table's partition key carries the tenant.

    ``new_upn`` is the latest UPN the case has seen; ``passkeys`` are the pre-change passkeys (broken
    by the change); ``removed_passkeys`` the ids our cleanup deleted. ``old_upn_seen_at`` is when the
    product last read ``old_upn`` from Graph (None: unknown, e.g. flags stored before it was kept), and
    ``old_upn_origin`` says whether the old UPN came from that snapshot or only from a ticket: the cleanup
    deletes only passkeys created before that moment, and never on a ticket's word. ``removal_approval``
    and ``removal_hold`` are the cleanup's state (see `removable_passkeys` and `needs_approval`).

    ``details_pending``: the case was opened (or renamed again) on the registration report's word that the
    user holds a passkey, before their passkeys were read; ``passkeys`` is then incomplete until
    `shared.upn.decide.complete_details` reads them. ``details_since`` is the detection that made the
    details pending (passkeys created later than it, by more than the clock margin, were registered after
    the rename and work); ``details_after``, set when the UPN changed back, is the moment before which
    passkeys were registered under the UPN the user has again (they work again). Both are kept only while
    the details are pending; ``details_since`` defaults to ``detected_at``.
    """

    user_id: str
    old_upn: str
    new_upn: str
    detected_at: datetime
    source: str
    ticket_id: str | None = None
    passkeys: tuple[PasskeyRef, ...] = ()
    status: FlagStatus = FlagStatus.PENDING
    status_changed_at: datetime | None = None
    history: tuple[HistoryEntry, ...] = ()
    removed_passkeys: tuple[str, ...] = ()
    old_upn_seen_at: datetime | None = None
    old_upn_origin: str = "snapshot"
    removal_approval: str | None = None
    removal_hold: str | None = None
    details_pending: bool = False
    details_since: datetime | None = None
    details_after: datetime | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {', '.join(SOURCES)}")
        if self.old_upn_origin not in OLD_UPN_ORIGINS:
            raise ValueError(f"old_upn_origin must be one of {', '.join(OLD_UPN_ORIGINS)}")
        if self.removal_approval not in (None, APPROVAL_REQUIRED, APPROVED):
            raise ValueError("removal_approval must be None, required or approved")
        if self.old_upn_seen_at is not None:
            object.__setattr__(self, "old_upn_seen_at", utc(self.old_upn_seen_at, "old_upn_seen_at"))
        object.__setattr__(self, "detected_at", utc(self.detected_at, "detected_at"))
        changed = self.detected_at if self.status_changed_at is None else self.status_changed_at
        object.__setattr__(self, "status_changed_at", utc(changed, "status_changed_at"))
        object.__setattr__(self, "status", FlagStatus(self.status))
        object.__setattr__(self, "passkeys", tuple(self.passkeys))
        object.__setattr__(self, "history", tuple(self.history)[-MAX_HISTORY:])
        object.__setattr__(self, "removed_passkeys", tuple(self.removed_passkeys))
        self._normalise_details()

    def _normalise_details(self) -> None:
        if not isinstance(self.details_pending, bool):
            raise ValueError("details_pending must be a bool")
        since, after = self.details_since, self.details_after
        if not self.details_pending:
            since = after = None
        else:
            since = self.detected_at if since is None else utc(since, "details_since")
            after = None if after is None else utc(after, "details_after")
        object.__setattr__(self, "details_since", since)
        object.__setattr__(self, "details_after", after)

    @property
    def passkey_ids(self) -> tuple[str, ...]:
        """The pre-change passkey ids, in order."""
        return tuple(p.id for p in self.passkeys)

    @property
    def changed_at(self) -> datetime:
        """``status_changed_at``, typed as always set (it defaults to ``detected_at``)."""
        assert self.status_changed_at is not None  # set by __post_init__
        return self.status_changed_at


# --- the JSON codec ------------------------------------------------------------------------------


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def flag_to_dict(flag: Flag) -> dict[str, Any]:
    """The flag as JSON-ready data with the stable field names the store and ``GET /api/flags`` use;
    datetimes are ISO 8601 UTC with ``Z``."""
    return {
        "userId": flag.user_id,
        "oldUpn": flag.old_upn,
        "newUpn": flag.new_upn,
        "detectedAt": _iso(flag.detected_at),
        "source": flag.source,
        "ticketId": flag.ticket_id,
        "passkeys": [{"id": p.id, "aaGuid": p.aa_guid, "model": p.model, "createdDateTime": p.created_date_time,
                      "displayName": p.display_name} for p in flag.passkeys],
        "status": flag.status.value,
        "statusChangedAt": _iso(flag.changed_at),
        "history": [{"at": _iso(h.at), "status": h.status.value, "note": h.note} for h in flag.history],
        "removedPasskeys": list(flag.removed_passkeys),
        "oldUpnSeenAt": _iso(flag.old_upn_seen_at) if flag.old_upn_seen_at else None,
        "oldUpnOrigin": flag.old_upn_origin,
        "removalApproval": flag.removal_approval,
        "removalHold": flag.removal_hold,
        "passkeyDetails": DETAILS_PENDING if flag.details_pending else DETAILS_COMPLETE,
        "detailsSince": _iso(flag.details_since) if flag.details_since else None,
        "detailsAfter": _iso(flag.details_after) if flag.details_after else None,
    }


def _text(data: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise InputError(f"flag.{key}: {'missing' if value is None else 'expected a non-empty string'}")
    return value


def _when(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise InputError(f"{where}: {'missing' if value is None else 'expected an ISO 8601 string'}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{where}: not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        raise InputError(f"{where}: has no time zone")
    return parsed.astimezone(UTC)


def _status(value: object, where: str) -> FlagStatus:
    if not isinstance(value, str):
        raise InputError(f"{where}: {'missing' if value is None else 'expected a string'}")
    try:
        return FlagStatus(value)
    except ValueError:
        raise InputError(f"{where}: not a flag status") from None


def _items(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"flag.{key}: expected a list")
    return value


def _passkeys(data: Mapping[str, Any]) -> tuple[PasskeyRef, ...]:
    passkeys = []
    for index, item in enumerate(_items(data, "passkeys")):
        where = f"flag.passkeys[{index}]"
        if not isinstance(item, Mapping):
            raise InputError(f"{where}: expected an object")
        ident = item.get("id")
        if not isinstance(ident, str) or not ident:
            raise InputError(f"{where}.id: missing")
        for key in ("aaGuid", "model", "createdDateTime", "displayName"):
            if item.get(key) is not None and not isinstance(item.get(key), str):
                raise InputError(f"{where}.{key}: expected a string")
        passkeys.append(PasskeyRef(id=ident, aa_guid=item.get("aaGuid"), model=item.get("model"),
                                   created_date_time=item.get("createdDateTime"),
                                   display_name=item.get("displayName")))
    return tuple(passkeys)


def _history(data: Mapping[str, Any]) -> tuple[HistoryEntry, ...]:
    history = []
    for index, item in enumerate(_items(data, "history")):
        where = f"flag.history[{index}]"
        if not isinstance(item, Mapping):
            raise InputError(f"{where}: expected an object")
        note = item.get("note", "")
        if not isinstance(note, str):
            raise InputError(f"{where}.note: expected a string")
        history.append(HistoryEntry(at=_when(item.get("at"), f"{where}.at"),
                                    status=_status(item.get("status"), f"{where}.status"), note=note))
    return tuple(history)


def flag_from_dict(data: Mapping[str, Any]) -> Flag:
    """Read a flag written by flag_to_dict. A malformed document raises InputError naming the field
    (``flag.<field>: ...``); ``ticketId``, ``history``, ``removedPasskeys``, ``statusChangedAt`` and the
    cleanup's fields may be absent. A flag stored before ``oldUpnSeenAt`` was kept reads it as unknown
    (None), so the cleanup never deletes on its account: the moment its old UPN was last seen is not known.
    A flag stored before ``passkeyDetails`` was kept reads as complete (its passkeys were read before it was
    opened); any value but ``pending`` or ``complete`` is refused.
    Unknown keys (storage bookkeeping, the `previous` list older rows carry) are ignored."""
    if not isinstance(data, Mapping):
        raise InputError("flag: expected an object")
    source = _text(data, "source")
    if source not in SOURCES:
        raise InputError(f"flag.source: expected one of {', '.join(SOURCES)}")
    passkeys, history = _passkeys(data), _history(data)
    removed = _items(data, "removedPasskeys")
    if not all(isinstance(pid, str) and pid for pid in removed):
        raise InputError("flag.removedPasskeys: expected a list of ids")
    origin = _text(data, "oldUpnOrigin", optional=True) or "snapshot"
    if origin not in OLD_UPN_ORIGINS:
        raise InputError(f"flag.oldUpnOrigin: expected one of {', '.join(OLD_UPN_ORIGINS)}")
    approval = _text(data, "removalApproval", optional=True)
    if approval not in (None, APPROVAL_REQUIRED, APPROVED):
        raise InputError(f"flag.removalApproval: expected {APPROVAL_REQUIRED} or {APPROVED}")
    details = data.get("passkeyDetails", DETAILS_COMPLETE)  # absent: a row stored before the field, complete
    if details not in (DETAILS_PENDING, DETAILS_COMPLETE):
        raise InputError(f"flag.passkeyDetails: expected {DETAILS_PENDING} or {DETAILS_COMPLETE}")
    since_raw, after_raw = data.get("detailsSince"), data.get("detailsAfter")
    seen_raw, changed_raw = data.get("oldUpnSeenAt"), data.get("statusChangedAt")
    detected = _when(data.get("detectedAt"), "flag.detectedAt")
    return Flag(
        user_id=_text(data, "userId") or "", old_upn=_text(data, "oldUpn") or "", new_upn=_text(data, "newUpn") or "",
        detected_at=detected, source=source, ticket_id=_text(data, "ticketId", optional=True),
        passkeys=passkeys, status=_status(data.get("status"), "flag.status"),
        status_changed_at=detected if changed_raw is None else _when(changed_raw, "flag.statusChangedAt"),
        history=history, removed_passkeys=tuple(removed),
        old_upn_seen_at=None if seen_raw is None else _when(seen_raw, "flag.oldUpnSeenAt"),
        old_upn_origin=origin, removal_approval=approval,
        removal_hold=_text(data, "removalHold", optional=True), details_pending=details == DETAILS_PENDING,
        details_since=None if since_raw is None else _when(since_raw, "flag.detailsSince"),
        details_after=None if after_raw is None else _when(after_raw, "flag.detailsAfter"),
    )


__all__ = [
    "APPROVAL_REQUIRED", "APPROVED", "DETAILS_COMPLETE", "DETAILS_PENDING", "MAX_HISTORY", "OLD_UPN_ORIGINS",
    "OPEN_STATUSES", "SOURCES", "Flag", "FlagStatus", "HistoryEntry", "PasskeyRef", "flag_from_dict", "flag_to_dict",
    "utc",
]
