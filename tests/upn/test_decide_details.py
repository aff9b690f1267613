"""Flag fast, enrich slowly (`shared.upn.decide`): a case opened on the registration report's word before the
user's passkeys are read (holder_flag), filled in later by the slow lane (complete_details), merged with further
renames, and left alone by the tracker and the cleanup while its details are pending."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.upn.decide import (
    CLOCK_MARGIN,
    TRANSITIONS,
    complete_details,
    decide_change,
    dismiss,
    holder_flag,
    mark_removed,
    merge_flag,
    removable_passkeys,
    stale_passkeys_to_remove,
    track,
)
from shared.upn.flag import SOURCES, Flag, FlagStatus
from tests.upn.test_decide import T0, USER, A, B, C, fast, flag_for, ids, pk, stored_flags, times, upns

OLD = "2025-06-01T00:00:00Z"  # long before the rename


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def holder(old: str = A, new: str = B, *, at: datetime = T0, **kwargs: Any) -> Flag:
    return holder_flag(USER, new, old, source="sweep", detected_at=at, **kwargs)


# --- holder_flag ----------------------------------------------------------------------------------


def test_holder_flag_opens_a_pending_case_whose_details_are_to_be_read() -> None:
    """No passkeys yet, details pending since the detection, one history line saying why."""
    flag = holder_flag(USER.upper(), B, A, source="notification", detected_at=T0, ticket_id="INC-4",
                       old_upn_seen_at=T0 - timedelta(hours=1))
    assert (flag.user_id, flag.old_upn, flag.new_upn, flag.source, flag.ticket_id) == (USER, A, B, "notification",
                                                                                        "INC-4")
    assert (flag.status, flag.passkeys, flag.details_pending, flag.details_since) == (FlagStatus.PENDING, (), True,
                                                                                      T0)
    assert flag.old_upn_seen_at == T0 - timedelta(hours=1) and flag.old_upn_origin == "snapshot"
    assert [h.note for h in flag.history] == [
        "UPN changed; the registration report lists a passkey; details to be read"]


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (("", B, A), {}, "user_id"),
    ((USER, "", A), {}, "current_upn"),
    ((USER, B, A), {"source": "carrier-pigeon"}, "source"),
    ((USER, B, A), {"detected_at": T0.replace(tzinfo=None)}, "timezone-aware"),
    ((USER, B, ""), {}, "snapshot_upn"),
    ((USER, B, B.upper()), {}, "snapshot_upn"),
    ((USER, B, A), {"old_upn_origin": "rumour"}, "old_upn_origin"),
])
def test_holder_flag_validates_like_decide_change(args: tuple[str, str, str], kwargs: dict[str, Any],
                                                  message: str) -> None:
    """Empty ids and UPNs, unknown sources, naive times and a UPN that did not change are programming errors."""
    with pytest.raises(ValueError, match=message):
        holder_flag(*args, **{"source": "sweep", "detected_at": T0, **kwargs})


# --- complete_details -----------------------------------------------------------------------------


def test_every_passkey_from_before_the_rename_is_pre_change() -> None:
    """The slow lane reads two old passkeys: they become the case's, the details complete, the case stays open."""
    at = T0 + timedelta(minutes=20)
    done = complete_details(holder(), [pk("p1"), pk("p2", iso(T0 - timedelta(days=3)))], at=at)
    assert (done.details_pending, done.details_since, done.status, done.passkey_ids) == (
        False, None, FlagStatus.PENDING, ("p1", "p2"))
    assert done.history[-1].note == "passkey details read: 2 pre-change passkey(s)" and done.history[-1].at == at
    assert done.passkeys[0].display_name == "key p1"


def test_a_passkey_registered_after_the_rename_is_not_pre_change() -> None:
    """Created later than the detection by more than the clock margin: registered after the rename, it works."""
    after = iso(T0 + CLOCK_MARGIN + timedelta(seconds=1))
    within = iso(T0 + CLOCK_MARGIN)
    done = complete_details(holder(), [pk("p1"), pk("n1", after), pk("p2", within)], at=T0 + timedelta(hours=1))
    assert done.passkey_ids == ("p1", "p2") and done.status == FlagStatus.PENDING
    assert done.history[-1].note == "passkey details read: 2 pre-change passkey(s)"


@pytest.mark.parametrize("created", [None, "yesterday", "2026-01-01T12:30:00"])  # absent, unreadable, no zone
def test_a_passkey_without_a_readable_creation_time_counts_as_pre_change(created: str | None) -> None:
    """When we cannot tell when it was registered, the harsher reading: it is broken."""
    item = {"id": "p9", "createdDateTime": created}
    done = complete_details(holder(), [item, pk("n1", iso(T0 + timedelta(hours=1)))], at=T0 + timedelta(hours=2))
    assert done.passkey_ids == ("p9",) and done.status == FlagStatus.PENDING


def test_only_passkeys_registered_after_the_rename_resolve_the_case() -> None:
    """The user had already re-registered when the details were read: nothing broken is left."""
    at = T0 + timedelta(hours=2)
    done = complete_details(holder(), [pk("n1", iso(T0 + timedelta(hours=1)))], at=at)
    assert (done.status, done.status_changed_at, done.passkeys, done.details_pending) == (
        FlagStatus.RESOLVED, at, (), False)
    assert [h.note for h in done.history[-2:]] == ["passkey details read: 0 pre-change passkey(s)",
                                                   "re-registered before the details were read"]


def test_no_passkey_at_all_dismisses_the_case() -> None:
    """The registration report was out of date: the user holds no passkey, so nothing is broken."""
    done = complete_details(holder(), [], at=T0 + timedelta(hours=1))
    assert (done.status, done.details_pending) == (FlagStatus.DISMISSED, False)
    assert done.history[-1].note == "holds no passkey: the registration report was out of date"


def test_completing_twice_changes_nothing_and_closed_flags_are_left_alone() -> None:
    """A second delivery of the slow lane's work returns the flag itself; so does any flag not waiting."""
    once = complete_details(holder(), [pk("p1")], at=T0 + timedelta(hours=1))
    assert complete_details(once, [pk("p1"), pk("p2")], at=T0 + timedelta(hours=2)) is once
    closed = dismiss(holder(), at=T0 + timedelta(minutes=5), note="user deleted")
    assert closed.details_pending
    assert complete_details(closed, [pk("p1")], at=T0 + timedelta(hours=1)) is closed
    complete = flag_for()
    assert complete_details(complete, [pk("p1"), pk("p3")], at=T0 + timedelta(hours=1)) is complete


def test_known_passkeys_stay_and_are_not_repeated() -> None:
    """A case that knew passkeys before its details went pending keeps them and adds the others once."""
    stored = flag_for(A, B, ("p1",))
    merged = merge_flag(stored, holder(B, C, at=T0 + timedelta(days=1)))
    assert merged is not None and merged.details_pending
    read = [pk("p1"), pk("p3", iso(T0 + timedelta(hours=5))), pk("n1", iso(T0 + timedelta(days=2)))]
    done = complete_details(merged, read, at=T0 + timedelta(days=3))
    assert done.passkey_ids == ("p1", "p3") and done.status == FlagStatus.PENDING
    assert done.history[-1].note == "passkey details read: 2 pre-change passkey(s)"


def test_a_known_passkey_gone_and_none_held_leaves_the_status_to_the_tracker() -> None:
    """The case knew a passkey the user has since removed: no dismissal, the tracker decides (cleared)."""
    merged = merge_flag(flag_for(A, B, ("p1",)), holder(B, C, at=T0 + timedelta(days=1)))
    assert merged is not None
    done = complete_details(merged, [], at=T0 + timedelta(days=2))
    assert (done.status, done.details_pending) == (FlagStatus.PENDING, False)
    assert track(done, [], T0 + timedelta(days=2)).new_status == FlagStatus.CLEARED


def test_a_removed_case_that_gains_broken_passkeys_is_pending_again() -> None:
    """Our cleanup had removed the old passkey; one registered under B breaks with B→C."""
    removed = mark_removed(flag_for(A, B, ("p1",)), ["p1"], at=T0 + timedelta(hours=1))
    merged = merge_flag(removed, holder(B, C, at=T0 + timedelta(days=1)))
    assert merged is not None and merged.status == FlagStatus.REMOVED and merged.details_pending
    done = complete_details(merged, [pk("p5", iso(T0 + timedelta(hours=3)))], at=T0 + timedelta(days=2))
    assert (done.status, done.passkey_ids, done.removed_passkeys) == (FlagStatus.PENDING, ("p1", "p5"), ("p1",))
    unchanged = complete_details(merged, [pk("n1", iso(T0 + timedelta(days=1, hours=1)))], at=T0 + timedelta(days=2))
    assert unchanged.status == FlagStatus.RESOLVED  # only a passkey registered after B→C: re-registered


def test_new_broken_passkeys_reset_an_earlier_approval() -> None:
    """An administrator's approval covered the earlier passkeys, not those the details add."""
    stored = replace(flag_for(A, B, ("p1",)), removal_approval="approved")
    merged = merge_flag(stored, holder(B, C, at=T0 + timedelta(days=1)))
    assert merged is not None and merged.removal_approval == "approved"
    done = complete_details(merged, [pk("p1"), pk("p4", iso(T0 + timedelta(hours=2)))], at=T0 + timedelta(days=2))
    assert done.removal_approval is None
    same = complete_details(merged, [pk("p1")], at=T0 + timedelta(days=2))
    assert same.removal_approval == "approved"


# --- merge_flag -----------------------------------------------------------------------------------


def test_a_holder_detection_of_the_same_change_is_a_duplicate() -> None:
    """Same new UPN while open: nothing to write, whichever side's details are pending."""
    assert merge_flag(holder(), holder(at=T0 + timedelta(minutes=5))) is None
    assert merge_flag(flag_for(), holder(at=T0 + timedelta(minutes=5))) is None
    assert merge_flag(holder(), flag_for(at=T0 + timedelta(minutes=5))) is None


def test_renamed_again_while_the_details_are_pending_keeps_them_pending_since_the_later_rename() -> None:
    """A→B (details pending), then B→C (details pending): one case A→C, pending since the second detection."""
    later = T0 + timedelta(hours=6)
    merged = merge_flag(holder(), holder(B, C, at=later))
    assert merged is not None
    assert (merged.old_upn, merged.new_upn, merged.detected_at, merged.details_pending, merged.details_since) == (
        A, C, T0, True, later)
    assert merged.history[-1].note == f"UPN changed again to {C}; passkeys registered meanwhile to be read"
    done = complete_details(merged, [pk("p1", iso(T0 + timedelta(hours=3)))], at=later + timedelta(hours=1))
    assert done.passkey_ids == ("p1",)  # registered under B, broken by B→C


def test_a_delivery_out_of_order_never_moves_the_details_time_back() -> None:
    """The later of the two detections stays the boundary (the harsher reading)."""
    stored = holder(at=T0 + timedelta(hours=6))
    merged = merge_flag(stored, holder(B, C, at=T0 + timedelta(hours=1)))
    assert merged is not None and merged.details_since == T0 + timedelta(hours=6)


def test_a_complete_case_renamed_again_on_the_report_s_word_waits_for_its_details() -> None:
    """A complete case A→B, then a holder detection B→C: the passkeys registered under B must be read."""
    later = T0 + timedelta(days=1)
    merged = merge_flag(flag_for(A, B, ("p1",)), holder(B, C, at=later))
    assert merged is not None
    assert (merged.passkey_ids, merged.details_pending, merged.details_since, merged.status) == (
        ("p1",), True, later, FlagStatus.PENDING)


def test_a_read_detection_adds_its_passkeys_but_the_details_stay_pending() -> None:
    """Stored details pending; a detection with passkeys read (B→C) adds them; complete_details still runs."""
    merged = merge_flag(holder(), flag_for(B, C, ("p1", "p2"), at=T0 + timedelta(hours=2)))
    assert merged is not None
    assert (merged.passkey_ids, merged.details_pending, merged.details_since, merged.new_upn) == (
        ("p1", "p2"), True, T0, C)
    done = complete_details(merged, [pk("p1"), pk("p2", iso(T0 + timedelta(hours=1)))], at=T0 + timedelta(hours=3))
    assert done.passkey_ids == ("p1", "p2") and not done.details_pending  # a known passkey stays pre-change


def test_renamed_back_on_the_report_s_word_reads_only_what_was_registered_in_between() -> None:
    """A→B (read: p1), then B→A on the report's word: p1 works again; a passkey registered under B is broken."""
    stored = flag_for(A, B, ("p1",))
    back = T0 + timedelta(days=1)
    merged = merge_flag(stored, holder(B, A, at=back))
    assert merged is not None
    assert (merged.old_upn, merged.new_upn, merged.details_pending, merged.details_after) == (B, A, True, T0)
    assert merged.history[-1].note == f"UPN changed back from {B}; passkeys registered in between to be read"
    between = pk("p7", iso(T0 + timedelta(hours=5)))
    done = complete_details(merged, [pk("p1"), between], at=back + timedelta(hours=1))
    assert (done.passkey_ids, done.status) == (("p7",), FlagStatus.PENDING)
    again = complete_details(merged, [pk("p1")], at=back + timedelta(hours=1))
    assert again.status == FlagStatus.DISMISSED
    assert again.history[-1].note == "UPN changed back: the passkeys registered before work again"


def test_renamed_back_while_the_details_are_pending_leaves_the_first_passkeys_out() -> None:
    """A→B on the report's word, then B→A read with passkeys: those from before A→B work again."""
    stored = holder(at=T0)
    back = T0 + timedelta(days=1)
    merged = merge_flag(stored, flag_for(B, A, ("p1",), at=back))  # p1 was registered long before A→B
    assert merged is not None and merged.status == FlagStatus.DISMISSED
    read = decide_change(USER, A, B, [pk("p1"), pk("p8", iso(T0 + timedelta(hours=4)))], source="sweep",
                         detected_at=back).flag
    assert read is not None
    reopened = merge_flag(stored, read)
    assert reopened is not None and (reopened.old_upn, reopened.new_upn, reopened.passkey_ids) == (B, A, ("p8",))
    assert not reopened.details_pending


# --- the tracker and the cleanup leave pending details alone --------------------------------------


def test_track_leaves_a_flag_alone_while_its_details_are_pending() -> None:
    """No resolution, no clearing: its pre-change passkeys are not known yet."""
    for current in ([], [pk("n1")], [pk("p1")]):
        result = track(holder(), current, T0 + timedelta(hours=1))
        assert (result.changed, result.note, result.new_status) == (False, "passkey details not read yet",
                                                                    FlagStatus.PENDING)
        assert result.flag == holder()


def test_the_cleanup_never_touches_a_flag_whose_details_are_pending() -> None:
    """Known passkeys of a details-pending case are neither listed, removable nor recordable as removed."""
    merged = merge_flag(replace(flag_for(A, B, ("p1",)), old_upn_seen_at=T0),
                        holder(B, C, at=T0 + timedelta(days=1)))
    assert merged is not None and merged.passkey_ids == ("p1",)
    assert stale_passkeys_to_remove(merged, [pk("p1")]) == []
    decision = removable_passkeys(merged, [pk("p1")])
    assert (decision.ids, decision.hold) == ((), None)
    with pytest.raises(ValueError, match="details are pending"):
        mark_removed(merged, ["p1"], at=T0 + timedelta(days=2))
    read = complete_details(merged, [pk("p1")], at=T0 + timedelta(days=2))
    assert removable_passkeys(read, [pk("p1")]).ids == ("p1",)  # once read, the usual rule applies


# --- properties -----------------------------------------------------------------------------------


@st.composite
def holder_flags(draw: st.DrawFn) -> Flag:
    old, new = draw(upns), draw(upns)
    if old.lower() == new.lower():
        new = "z@other.example"
    return holder_flag(USER, new, old, source=draw(st.sampled_from(SOURCES)), detected_at=draw(times))


@st.composite
def reads(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A fido2Methods read: ids with a creation time around T0, or none."""
    created = st.none() | times.map(iso) | st.just(OLD)
    return [{"id": p, "createdDateTime": draw(created)} for p in draw(ids)]


@fast
@given(st.none() | stored_flags(), holder_flags())
def test_merging_a_holder_detection_is_idempotent(existing: Flag | None, new: Flag) -> None:
    """Merging the same holder detection twice writes the same as merging it once."""
    first = merge_flag(existing, new)
    assert merge_flag(first if first is not None else existing, new) is None


@fast
@given(stored_flags(), holder_flags())
def test_an_open_case_merged_with_a_holder_detection_has_pending_details(existing: Flag, new: Flag) -> None:
    """Whatever continues an open case on the report's word waits for its details, keeping what it knew."""
    merged = merge_flag(existing, new)
    if existing.status.is_open and merged is not None and merged.status.is_open:
        assert merged.details_pending
        if merged.old_upn == existing.old_upn and merged.detected_at == existing.detected_at:
            assert set(existing.passkey_ids) <= set(merged.passkey_ids)


@fast
@given(stored_flags(), reads(), times)
def test_complete_details_moves_only_along_the_table_and_only_once(flag: Flag, read: list[dict[str, Any]],
                                                                   at: datetime) -> None:
    """The details complete, known passkeys are kept without repeats, the status moves only as TRANSITIONS
    allows, and a second call changes nothing."""
    done = complete_details(flag, read, at=at)
    if not flag.status.is_open or not flag.details_pending:
        assert done is flag
        return
    assert not done.details_pending and done.details_since is None and done.details_after is None
    assert set(flag.passkey_ids) <= set(done.passkey_ids) and len(set(done.passkey_ids)) == len(done.passkey_ids)
    assert done.status == flag.status or done.status in TRANSITIONS[flag.status]
    assert complete_details(done, read, at=at + timedelta(hours=1)) is done
