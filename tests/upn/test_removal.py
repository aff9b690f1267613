"""The stale-passkey cleanup's decisions (pure): which passkeys may go, when a flag waits for an approval."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.errors import InputError
from shared.upn.decide import (
    CLOCK_MARGIN,
    approve_removal,
    decide_change,
    hold_removal,
    merge_flag,
    needs_approval,
    removable_passkeys,
    require_approval,
)
from shared.upn.flag import APPROVAL_REQUIRED, APPROVED, FlagStatus, flag_from_dict, flag_to_dict

USER = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
SEEN = datetime(2026, 1, 1, 11, 0, tzinfo=UTC)  # the product last read the old UPN
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # the new UPN is detected
A, B, C = "alex@old.example", "alex@new.example", "alex@third.example"


def pk(ident: str, created: str | None) -> dict[str, Any]:
    """A Graph fido2Methods item created at `created`."""
    return {"id": ident, "displayName": f"key {ident}", "createdDateTime": created,
            "aaGuid": "90a3ccdf-635c-4729-a248-9b709135078f", "model": "Some Key"}


def flagged(keys: list[dict[str, Any]], *, seen: datetime | None = SEEN, origin: str = "snapshot",
            new: str = B, old: str = A, at: datetime = T0):
    decision = decide_change(USER, new, old, keys, source="sweep", detected_at=at, old_upn_seen_at=seen,
                             old_upn_origin=origin)
    assert decision.flag is not None
    return decision.flag


def test_only_passkeys_created_before_the_old_upn_was_last_seen_may_go():
    """Older than oldUpnSeenAt by the clock margin: removable; registered after it (maybe after the rename): kept."""
    keys = [pk("old", "2025-05-01T08:00:00Z"), pk("edge", (SEEN - CLOCK_MARGIN + timedelta(seconds=1)).isoformat()),
            pk("new", "2026-01-01T11:30:00Z"), pk("undated", None)]
    flag = flagged(keys)
    assert removable_passkeys(flag, keys).ids == ("old",)
    assert removable_passkeys(flag, keys).hold is None


def test_nothing_old_enough_is_held_with_a_code():
    """Every remaining pre-change passkey may be newer than the rename: nothing goes, the hold says why."""
    keys = [pk("new", "2026-01-01T11:30:00Z")]
    decision = removable_passkeys(flagged(keys), keys)
    assert decision.ids == () and decision.hold == "passkeysNotOlderThanOldUpn"


def test_a_ticket_only_old_upn_never_removes():
    """An old UPN that only a ticket named is not the product's own sight of it: nothing is removable."""
    keys = [pk("old", "2020-01-01T00:00:00Z")]
    decision = removable_passkeys(flagged(keys, seen=None, origin="ticket"), keys)
    assert decision.ids == () and decision.hold == "oldUpnFromTicket"


def test_a_flag_stored_before_the_seen_time_was_kept_never_removes():
    """A stored flag without oldUpnSeenAt reads as unknown, and unknown never deletes anything."""
    keys = [pk("old", "2020-01-01T00:00:00Z")]
    doc = flag_to_dict(flagged(keys))
    for key in ("oldUpnSeenAt", "oldUpnOrigin", "removalApproval", "removalHold"):
        del doc[key]
    legacy = flag_from_dict(json.loads(json.dumps(doc)))
    assert legacy.old_upn_seen_at is None and legacy.old_upn_origin == "snapshot"
    assert removable_passkeys(legacy, keys).hold == "oldUpnSeenAtUnknown"


def test_only_pending_flags_with_stale_passkeys_present_are_considered():
    """Removed, closed, or already-deleted passkeys: nothing to do and nothing held."""
    keys = [pk("old", "2020-01-01T00:00:00Z")]
    flag = flagged(keys)
    assert removable_passkeys(flag, []).ids == () and removable_passkeys(flag, []).hold is None
    assert removable_passkeys(replace(flag, status=FlagStatus.REMOVED), keys).ids == ()


def test_a_renamed_again_case_keeps_the_first_old_upn_sight():
    """A→B then B→C is one case from A: the sight of A stays, so passkeys registered under B are kept."""
    first = flagged([pk("a-key", "2020-01-01T00:00:00Z")])
    later = flagged([pk("a-key", "2020-01-01T00:00:00Z"), pk("b-key", "2026-01-01T12:30:00Z")], old=B, new=C,
                    seen=T0 + timedelta(hours=1), at=T0 + timedelta(hours=2))
    merged = merge_flag(first, later)
    assert merged is not None and merged.old_upn_seen_at == SEEN
    assert removable_passkeys(merged, [pk("a-key", "2020-01-01T00:00:00Z"),
                                       pk("b-key", "2026-01-01T12:30:00Z")]).ids == ("a-key",)


@pytest.mark.parametrize(("approval", "count", "budget", "waits"), [
    (None, 2, 2, False), (None, 3, 2, True), (None, 1, 0, True),
    (APPROVAL_REQUIRED, 1, 25, True), (APPROVED, 100, 0, False),
])
def test_the_cap_counts_passkeys_and_a_user_is_never_split(approval, count, budget, waits):
    """A flag waits when its passkeys exceed the run's remaining budget, or while it waits; approved ones never."""
    flag = replace(flagged([pk("old", "2020-01-01T00:00:00Z")]), removal_approval=approval)
    assert needs_approval(flag, count, budget) is waits


def test_approval_moves_a_waiting_flag_once_and_refuses_others():
    """required -> approved (with a history line); approving again is a no-op; a flag not waiting is refused."""
    flag = require_approval(flagged([pk("old", "2020-01-01T00:00:00Z")]), at=T0, cap=25)
    assert flag.removal_approval == APPROVAL_REQUIRED and flag.removal_hold == "approvalRequired"
    approved = approve_removal(flag, at=T0, by="cli")
    assert approved.removal_approval == APPROVED and approved.history[-1].note == "stale passkey removal approved (cli)"
    assert approve_removal(approved, at=T0, by="http") is approved
    with pytest.raises(ValueError, match="not waiting"):
        approve_removal(flagged([pk("old", "2020-01-01T00:00:00Z")]), at=T0, by="cli")


def test_a_repeated_hold_adds_no_history():
    """The same hold reason run after run leaves the flag unchanged (no rewrite)."""
    flag = hold_removal(flagged([pk("old", "2020-01-01T00:00:00Z")]), "auditMode", at=T0)
    assert hold_removal(flag, "auditMode", at=T0 + timedelta(hours=1)) is flag


def test_the_cleanup_fields_round_trip_and_bad_values_name_the_field():
    """oldUpnSeenAt, oldUpnOrigin, removalApproval and removalHold survive JSON; a bad one is named."""
    flag = require_approval(flagged([pk("old", "2020-01-01T00:00:00Z")]), at=T0, cap=1)
    doc = json.loads(json.dumps(flag_to_dict(flag)))
    assert doc["oldUpnSeenAt"] == "2026-01-01T11:00:00Z" and doc["oldUpnOrigin"] == "snapshot"
    assert flag_from_dict(doc) == flag
    for key, value in (("oldUpnOrigin", "rumour"), ("removalApproval", "yes"), ("oldUpnSeenAt", "yesterday")):
        with pytest.raises(InputError, match=f"flag.{key}"):
            flag_from_dict({**doc, key: value})


def test_an_approval_does_not_cover_passkeys_broken_by_a_later_rename():
    """Approved for A→B's passkeys; B→C breaks passkeys registered under B: the case must be approved again."""
    first = approve_removal(require_approval(flagged([pk("a-key", "2020-01-01T00:00:00Z")]), at=T0, cap=0),
                            at=T0, by="cli")
    later = flagged([pk("a-key", "2020-01-01T00:00:00Z"), pk("b-key", "2026-01-01T12:30:00Z")], old=B, new=C,
                    at=T0 + timedelta(hours=2))
    merged = merge_flag(first, later)
    assert merged is not None and merged.removal_approval is None
    same_keys = merge_flag(first, flagged([pk("a-key", "2020-01-01T00:00:00Z")], old=B, new=C,
                                          at=T0 + timedelta(hours=2)))
    assert same_keys is not None and same_keys.removal_approval == APPROVED
