"""The flag record and its JSON codec (`shared.upn.flag`): stable field names, defaults, errors that name
the field, the history cap, and the round trip through JSON."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given

from shared.errors import InputError
from shared.upn.decide import holder_flag, mark_removed
from shared.upn.flag import MAX_HISTORY, Flag, FlagStatus, HistoryEntry, flag_from_dict, flag_to_dict
from tests.upn.test_decide import T0, USER, A, B, fast, flag_for, stored_flags


def test_flag_to_dict_has_the_stable_field_names() -> None:
    """The stored/served shape: exact keys, ISO 8601 UTC with Z, status as its value."""
    flag = mark_removed(flag_for(ticket_id="INC-9"), ["p1"], at=T0 + timedelta(minutes=30))
    data = flag_to_dict(flag)
    assert list(data) == ["userId", "oldUpn", "newUpn", "detectedAt", "source", "ticketId", "passkeys", "status",
                          "statusChangedAt", "history", "removedPasskeys", "oldUpnSeenAt", "oldUpnOrigin",
                          "removalApproval", "removalHold", "passkeyDetails", "detailsSince", "detailsAfter"]
    assert (data["passkeyDetails"], data["detailsSince"], data["detailsAfter"]) == ("complete", None, None)
    assert data["detectedAt"] == "2026-01-01T12:00:00Z" and data["statusChangedAt"] == "2026-01-01T12:30:00Z"
    assert data["status"] == "removed" and data["removedPasskeys"] == ["p1"]
    assert data["passkeys"][0] == {"id": "p1", "aaGuid": "90a3ccdf-635c-4729-a248-9b709135078f",
                                   "model": "Some Key", "createdDateTime": "2025-06-01T00:00:00Z",
                                   "displayName": "key p1"}
    assert data["history"][-1] == {"at": "2026-01-01T12:30:00Z", "status": "removed",
                                   "note": "removed 1 pre-change passkey(s)"}
    assert flag_from_dict(json.loads(json.dumps(data))) == flag


def test_flag_from_dict_defaults_the_optional_fields() -> None:
    """ticketId, history, removedPasskeys and statusChangedAt may be absent."""
    flag = flag_from_dict({"userId": USER, "oldUpn": A, "newUpn": B, "detectedAt": "2026-01-01T12:00:00+00:00",
                           "source": "sweep", "passkeys": [{"id": "p1"}], "status": "pending"})
    assert (flag.ticket_id, flag.history, flag.removed_passkeys, flag.status_changed_at) == (None, (), (), T0)


@pytest.mark.parametrize(("change", "message"), [
    ({"userId": None}, "flag.userId: missing"),
    ({"oldUpn": 3}, "flag.oldUpn: expected a non-empty string"),
    ({"detectedAt": "yesterday"}, "flag.detectedAt: not an ISO 8601 date-time"),
    ({"detectedAt": "2026-01-01T12:00:00"}, "flag.detectedAt: has no time zone"),
    ({"source": "fax"}, "flag.source: expected one of"),
    ({"status": "open"}, "flag.status: not a flag status"),
    ({"status": ["pending"]}, "flag.status: expected a string"),
    ({"passkeys": {}}, "flag.passkeys: expected a list"),
    ({"passkeys": [{"displayName": "x"}]}, "flag.passkeys[0].id: missing"),
    ({"passkeys": [{"id": "p", "model": 1}]}, "flag.passkeys[0].model: expected a string"),
    ({"history": [{"at": "2026-01-01T12:00:00Z", "status": "nope"}]}, "flag.history[0].status: not a flag"),
    ({"removedPasskeys": [1]}, "flag.removedPasskeys: expected a list of ids"),
    ({"passkeyDetails": "partial"}, "flag.passkeyDetails: expected pending or complete"),
    ({"passkeyDetails": None}, "flag.passkeyDetails: expected pending or complete"),
    ({"passkeyDetails": True}, "flag.passkeyDetails: expected pending or complete"),
    ({"passkeyDetails": "pending", "detailsSince": "soon"}, "flag.detailsSince: not an ISO 8601 date-time"),
    ({"passkeyDetails": "pending", "detailsAfter": 5}, "flag.detailsAfter: expected an ISO 8601 string"),
])
def test_flag_from_dict_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    """A malformed stored flag is an InputError naming the field."""
    data = {**flag_to_dict(flag_for()), **change}
    with pytest.raises(InputError) as caught:
        flag_from_dict(data)
    assert caught.value.message.startswith(message)


def test_history_is_capped() -> None:
    """Only the newest MAX_HISTORY entries are kept."""
    flag = flag_for()
    entries = tuple(HistoryEntry(T0 + timedelta(minutes=i), FlagStatus.PENDING, str(i)) for i in range(50))
    capped = replace(flag, history=entries)
    assert len(capped.history) == MAX_HISTORY and capped.history[-1].note == "49"


@fast
@given(stored_flags())
def test_flag_dict_round_trip(flag: Flag) -> None:
    """flag_from_dict(flag_to_dict(f)) == f, through JSON."""
    assert flag_from_dict(json.loads(json.dumps(flag_to_dict(flag)))) == flag


def test_a_details_pending_flag_is_written_and_read_back() -> None:
    """A holder flag is stored as passkeyDetails "pending" with the detection it has been pending since."""
    flag = holder_flag(USER, B, A, source="sweep", detected_at=T0)
    data = flag_to_dict(flag)
    assert (data["passkeyDetails"], data["detailsSince"], data["passkeys"]) == ("pending", "2026-01-01T12:00:00Z", [])
    back = flag_from_dict(json.loads(json.dumps(data)))
    assert back == flag and back.details_pending and back.details_since == T0
    after = replace(flag, details_after=T0 - timedelta(days=1))
    assert flag_to_dict(after)["detailsAfter"] == "2025-12-31T12:00:00Z"
    assert flag_from_dict(flag_to_dict(after)) == after


def test_a_row_stored_before_passkey_details_reads_as_complete() -> None:
    """Rows written before the field existed had their passkeys read: absent means complete."""
    data = flag_to_dict(flag_for())
    for key in ("passkeyDetails", "detailsSince", "detailsAfter"):
        del data[key]
    flag = flag_from_dict(data)
    assert (flag.details_pending, flag.details_since, flag.details_after) == (False, None, None)
    assert flag_from_dict({**data, "passkeyDetails": "complete"}) == flag


def test_details_times_are_kept_only_while_pending() -> None:
    """A pending flag's detailsSince defaults to its detection; a complete flag keeps neither time."""
    pending = replace(flag_for(), details_pending=True)
    assert pending.details_since == T0 and pending.details_after is None
    complete = replace(pending, details_pending=False)
    assert (complete.details_since, complete.details_after) == (None, None)
    with pytest.raises(ValueError, match="details_since must be timezone-aware"):
        replace(pending, details_since=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="details_pending must be a bool"):
        replace(pending, details_pending="yes")
