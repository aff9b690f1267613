"""UPN-change decisions, flag merging, re-registration tracking and flag serialisation."""
from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.upn.decide import (
    TRANSITIONS,
    DecisionKind,
    decide_change,
    dismiss,
    mark_removed,
    merge_flag,
    passkey_refs,
    stale_passkeys_to_remove,
    track,
    transition,
)
from shared.upn.flag import OPEN_STATUSES, SOURCES, Flag, FlagStatus, HistoryEntry, PasskeyRef

USER = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
A, B, C = "alex@old.example", "alex@new.example", "alex@third.example"


def pk(ident: str, created: str = "2025-06-01T00:00:00Z") -> dict[str, Any]:
    """A Graph fido2Methods item."""
    return {"id": ident, "displayName": f"key {ident}", "createdDateTime": created,
            "aaGuid": "90a3ccdf-635c-4729-a248-9b709135078f", "model": "Some Key", "attestationLevel": "attested"}


def flag_for(old: str = A, new: str = B, passkeys: tuple[str, ...] = ("p1", "p2"), *, at: datetime = T0,
             source: str = "notification", ticket_id: str | None = None) -> Flag:
    decision = decide_change(USER, new, old, [pk(p) for p in passkeys], source=source, detected_at=at,
                             ticket_id=ticket_id)
    assert decision.flag is not None
    return decision.flag


# --- decide_change --------------------------------------------------------------------------------


def test_first_sight_seeds_without_flagging() -> None:
    """No snapshot: record the UPN, flag no one, even with passkeys."""
    decision = decide_change(USER, A, None, [pk("p1")], source="sweep", detected_at=T0)
    assert (decision.kind, decision.write_snapshot, decision.flag, decision.upn) == (DecisionKind.SEED, True, None, A)


def test_empty_snapshot_counts_as_first_sight() -> None:
    """An empty stored UPN is treated like no snapshot."""
    assert decide_change(USER, A, "", [pk("p1")], source="sweep", detected_at=T0).kind == DecisionKind.SEED


def test_same_upn_is_unchanged_and_writes_nothing() -> None:
    """An identical UPN needs no write."""
    decision = decide_change(USER, A, A, [pk("p1")], source="notification", detected_at=T0)
    assert (decision.kind, decision.write_snapshot, decision.flag) == (DecisionKind.UNCHANGED, False, None)


def test_case_only_change_is_unchanged_but_rewrites_the_snapshot() -> None:
    """UPNs compare without case; a case-only change is recorded but not flagged."""
    decision = decide_change(USER, A.upper(), A, [pk("p1")], source="notification", detected_at=T0)
    assert (decision.kind, decision.write_snapshot, decision.flag) == (DecisionKind.UNCHANGED, True, None)


def test_rename_with_passkeys_flags_the_user() -> None:
    """A changed UPN with passkeys opens a pending flag listing them and updates the snapshot."""
    decision = decide_change(USER.upper(), B, A, [pk("p1"), pk("p2")], source="ticket", detected_at=T0,
                             ticket_id="INC-1")
    assert decision.kind == DecisionKind.FLAG and decision.write_snapshot
    assert (decision.upn, decision.previous_upn) == (B, A)
    flag = decision.flag
    assert flag is not None
    assert (flag.user_id, flag.old_upn, flag.new_upn, flag.detected_at, flag.source, flag.ticket_id) == (
        USER, A, B, T0, "ticket", "INC-1")
    assert flag.status == FlagStatus.PENDING and flag.status_changed_at == T0
    assert flag.passkeys[0] == PasskeyRef(id="p1", aa_guid="90a3ccdf-635c-4729-a248-9b709135078f",
                                          model="Some Key", created_date_time="2025-06-01T00:00:00Z",
                                          display_name="key p1")
    assert flag.passkey_ids == ("p1", "p2")
    assert [h.status for h in flag.history] == [FlagStatus.PENDING]


def test_rename_without_passkeys_is_rename_only() -> None:
    """Nothing is broken when the user holds no passkey: update the snapshot, flag no one."""
    decision = decide_change(USER, B, A, [], source="sweep", detected_at=T0)
    assert (decision.kind, decision.write_snapshot, decision.flag) == (DecisionKind.RENAME_ONLY, True, None)


def test_decide_validates_its_arguments() -> None:
    """Unknown sources, naive times and empty UPNs are programming errors."""
    with pytest.raises(ValueError, match="source"):
        decide_change(USER, B, A, [], source="carrier-pigeon", detected_at=T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        decide_change(USER, B, A, [], source="sweep", detected_at=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="current_upn"):
        decide_change(USER, "", A, [], source="sweep", detected_at=T0)


def test_passkey_refs_accept_graph_and_sdk_names_and_dedupe() -> None:
    """camelCase Graph JSON and snake_case SDK names both work; a repeated id is kept once."""
    refs = passkey_refs([pk("p1"), {"id": "p2", "aa_guid": "g", "display_name": "d",
                                    "created_date_time": datetime(2025, 1, 1, tzinfo=UTC)}, pk("p1")])
    assert [r.id for r in refs] == ["p1", "p2"]
    assert refs[1] == PasskeyRef(id="p2", aa_guid="g", display_name="d", created_date_time="2025-01-01T00:00:00+00:00")
    with pytest.raises(ValueError, match=r"passkeys\[0\]\.id: missing"):
        passkey_refs([{"displayName": "x"}])


# --- merge_flag -----------------------------------------------------------------------------------


def test_merge_into_nothing_is_the_new_flag() -> None:
    """No stored flag: write the new one."""
    new = flag_for()
    assert merge_flag(None, new) is new


def test_merge_same_change_is_a_duplicate() -> None:
    """The same user and new UPN while open: nothing to write."""
    stored = flag_for()
    assert merge_flag(stored, flag_for(at=T0 + timedelta(hours=1), passkeys=("p1", "p2", "p9"))) is None
    assert merge_flag(stored, flag_for(new=B.upper())) is None


def test_second_rename_keeps_the_original_case() -> None:
    """A→B then B→C: one open case A→C with the original detection and every broken passkey."""
    stored = flag_for(A, B, ("p1", "p2"), ticket_id=None)
    later = T0 + timedelta(days=1)
    merged = merge_flag(stored, flag_for(B, C, ("p2", "p3"), at=later, source="sweep", ticket_id="INC-2"))
    assert merged is not None
    assert (merged.old_upn, merged.new_upn, merged.detected_at, merged.source) == (A, C, T0, "notification")
    assert merged.passkey_ids == ("p1", "p2", "p3")  # p3 was registered under B: broken by B→C too
    assert merged.status == FlagStatus.PENDING and merged.ticket_id == "INC-2"
    assert merged.history[-1].note.startswith(f"UPN changed again to {C}")


def test_second_rename_reopens_a_removed_case_when_more_passkeys_break() -> None:
    """removed + a rename that breaks a passkey registered meanwhile goes back to pending."""
    stored = mark_removed(flag_for(A, B, ("p1",)), ["p1"], at=T0 + timedelta(hours=1))
    merged = merge_flag(stored, flag_for(B, C, ("p5",), at=T0 + timedelta(hours=2)))
    assert merged is not None and merged.status == FlagStatus.PENDING
    assert merged.removed_passkeys == ("p1",) and merged.passkey_ids == ("p1", "p5")


def test_rename_back_dismisses_the_case() -> None:
    """A→B then B→A before re-registering: the old passkeys work again, so the case is dismissed."""
    stored = flag_for(A, B, ("p1",))
    back = T0 + timedelta(hours=3)
    merged = merge_flag(stored, flag_for(B, A, ("p1",), at=back))
    assert merged is not None
    assert merged.status == FlagStatus.DISMISSED and merged.status_changed_at == back
    assert (merged.old_upn, merged.new_upn) == (A, A)


def test_rename_back_with_passkeys_registered_in_between_opens_a_new_case() -> None:
    """Passkeys registered under B break when the UPN goes back to A: they, and only they, are flagged."""
    stored = flag_for(A, B, ("p1",))
    merged = merge_flag(stored, flag_for(B, A, ("p1", "p7"), at=T0 + timedelta(hours=3)))
    assert merged is not None
    assert (merged.old_upn, merged.new_upn, merged.status, merged.passkey_ids) == (B, A, FlagStatus.PENDING, ("p7",))


def test_closed_case_and_a_new_rename_is_a_new_case() -> None:
    """After resolution, a further rename starts a fresh case."""
    resolved = track(flag_for(A, B, ("p1",)), [pk("n1")], T0 + timedelta(days=1)).flag
    new = flag_for(B, C, ("n1",), at=T0 + timedelta(days=2))
    assert merge_flag(resolved, new) is new


def test_closed_case_replayed_change_is_a_duplicate() -> None:
    """The change that opened a case, seen again after it closed, writes nothing."""
    original = flag_for(A, B, ("p1",))
    resolved = track(original, [pk("n1")], T0 + timedelta(days=1)).flag
    assert merge_flag(resolved, original) is None


def test_merge_refuses_two_users() -> None:
    """Flags of different users are never merged."""
    other = replace(flag_for(), user_id="bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee")
    with pytest.raises(ValueError):
        merge_flag(flag_for(), other)


# --- track, cleanup, transitions ------------------------------------------------------------------


def test_track_still_holding_old_passkeys_is_no_change() -> None:
    """While any pre-change passkey is registered, the case stays as it is."""
    flag = flag_for(passkeys=("p1", "p2"))
    result = track(flag, [pk("p2"), pk("n1")], T0 + timedelta(hours=1))
    assert (result.new_status, result.changed, result.flag) == (FlagStatus.PENDING, False, flag)
    assert result.note == "1 pre-change passkey(s) still registered; 1 new"


def test_track_resolves_when_old_gone_and_new_present() -> None:
    """Every pre-change passkey gone and a new one registered: resolved, with history and time."""
    now = T0 + timedelta(hours=5)
    result = track(flag_for(), [{"id": "n1"}], now)
    assert (result.new_status, result.changed) == (FlagStatus.RESOLVED, True)
    assert result.flag.status == FlagStatus.RESOLVED and result.flag.status_changed_at == now
    assert result.flag.history[-1] == HistoryEntry(now, FlagStatus.RESOLVED, result.note)


def test_track_clears_when_user_removed_everything() -> None:
    """The user deleted the old passkeys and registered none: cleared (nothing broken remains)."""
    result = track(flag_for(), [], T0 + timedelta(hours=1))
    assert (result.new_status, result.changed) == (FlagStatus.CLEARED, True)


def test_track_after_our_cleanup_waits_for_a_new_passkey() -> None:
    """After our cleanup, no passkey means removed (still open), and a new one resolves it."""
    removed = mark_removed(flag_for(passkeys=("p1",)), ["p1"], at=T0 + timedelta(hours=1))
    assert removed.status == FlagStatus.REMOVED
    waiting = track(removed, [], T0 + timedelta(hours=2))
    assert (waiting.new_status, waiting.changed) == (FlagStatus.REMOVED, False)
    done = track(removed, [pk("n1")], T0 + timedelta(hours=3))
    assert done.new_status == FlagStatus.RESOLVED


def test_track_partial_cleanup_then_user_removes_rest_is_removed_not_cleared() -> None:
    """If our cleanup deleted any pre-change passkey, an empty list is removed, not cleared."""
    flag = flag_for(passkeys=("p1", "p2"))
    partial = replace(flag, removed_passkeys=("p1",))
    assert track(partial, [], T0 + timedelta(hours=1)).new_status == FlagStatus.REMOVED


def test_track_never_changes_closed_flags() -> None:
    """Closed cases are left alone by the tracker."""
    closed = dismiss(flag_for(), at=T0 + timedelta(hours=1), note="user deleted")
    result = track(closed, [], T0 + timedelta(hours=2))
    assert (result.new_status, result.changed, result.flag) == (FlagStatus.DISMISSED, False, closed)


def test_stale_passkeys_are_the_pre_change_ones_still_present() -> None:
    """Cleanup targets exactly the pre-change passkeys the user still holds, in flag order."""
    flag = flag_for(passkeys=("p1", "p2", "p3"))
    assert stale_passkeys_to_remove(flag, [pk("n1"), pk("p3"), pk("p1")]) == ["p1", "p3"]
    assert stale_passkeys_to_remove(dismiss(flag, at=T0, note="x"), [pk("p1")]) == []


def test_mark_removed_is_idempotent_and_refuses_other_ids() -> None:
    """Recording the same removal twice changes nothing; a non-pre-change id is refused."""
    flag = flag_for(passkeys=("p1", "p2"))
    once = mark_removed(flag, ["p1"], at=T0 + timedelta(hours=1))
    assert mark_removed(once, ["p1"], at=T0 + timedelta(hours=2)) is once
    assert mark_removed(once, ["p2"], at=T0 + timedelta(hours=2)).removed_passkeys == ("p1", "p2")
    with pytest.raises(ValueError):
        mark_removed(flag, ["n1"], at=T0)


def test_transition_refuses_moves_not_in_the_table() -> None:
    """Closed statuses are terminal and pending cannot jump to itself."""
    resolved = track(flag_for(), [pk("n1")], T0 + timedelta(hours=1)).flag
    with pytest.raises(ValueError, match="cannot become"):
        transition(resolved, FlagStatus.PENDING, at=T0, note="no")
    with pytest.raises(ValueError):
        transition(flag_for(), FlagStatus.PENDING, at=T0, note="no")


def test_dismiss_closes_open_and_leaves_closed_alone() -> None:
    """A deleted user's open case is dismissed; dismissing again writes nothing."""
    dismissed = dismiss(flag_for(), at=T0 + timedelta(hours=1), note="user deleted")
    assert dismissed.status == FlagStatus.DISMISSED and dismissed.history[-1].note == "user deleted"
    assert dismiss(dismissed, at=T0 + timedelta(hours=2), note="user deleted") is dismissed


def test_transition_table_matches_the_documented_diagram() -> None:
    """Open statuses are exactly those with a way out; the table is the one the docstring draws."""
    assert {s for s, targets in TRANSITIONS.items() if targets} == OPEN_STATUSES
    assert TRANSITIONS[FlagStatus.PENDING] == {FlagStatus.RESOLVED, FlagStatus.REMOVED, FlagStatus.DISMISSED,
                                               FlagStatus.CLEARED}
    assert TRANSITIONS[FlagStatus.REMOVED] == {FlagStatus.RESOLVED, FlagStatus.DISMISSED, FlagStatus.PENDING}


# --- properties -----------------------------------------------------------------------------------

upns = st.sampled_from([A, B, C, A.upper(), "x@y.example"])
ids = st.lists(st.sampled_from(["p1", "p2", "p3", "p4", "n1"]), max_size=4, unique=True)
times = st.integers(min_value=0, max_value=10_000).map(lambda m: T0 + timedelta(minutes=m))
statuses = st.sampled_from(list(FlagStatus))


@st.composite
def stored_flags(draw: st.DrawFn) -> Flag:
    detected = draw(times)
    passkeys = draw(ids.filter(bool))
    return Flag(user_id=USER, old_upn=draw(upns), new_upn=draw(upns), detected_at=detected,
                source=draw(st.sampled_from(SOURCES)), ticket_id=draw(st.none() | st.just("INC-1")),
                passkeys=tuple(PasskeyRef(p) for p in passkeys), status=draw(statuses),
                status_changed_at=detected + timedelta(minutes=draw(st.integers(0, 500))),
                history=tuple(HistoryEntry(draw(times), draw(statuses), draw(st.text(max_size=10)))
                              for _ in range(draw(st.integers(0, 3)))),
                removed_passkeys=tuple(draw(st.lists(st.sampled_from(passkeys), unique=True))),
                details_pending=(pending := draw(st.booleans())),
                details_since=detected + timedelta(minutes=draw(st.integers(0, 500))) if pending else None,
                details_after=draw(st.none() | times) if pending else None)


@st.composite
def new_flags(draw: st.DrawFn) -> Flag:
    old, new = draw(upns), draw(upns)
    if old.lower() == new.lower():
        new = "z@other.example"
    return flag_for(old, new, tuple(draw(ids.filter(bool))), at=draw(times), source=draw(st.sampled_from(SOURCES)))


fast = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(st.none() | stored_flags(), new_flags())
def test_merge_is_idempotent(existing: Flag | None, new: Flag) -> None:
    """Merging the same detection twice writes the same as merging it once."""
    first = merge_flag(existing, new)
    state = first if first is not None else existing
    assert merge_flag(state, new) is None


@fast
@given(stored_flags(), new_flags())
def test_merge_never_forgets_a_broken_passkey(existing: Flag, new: Flag) -> None:
    """When an open case continues, its pre-change passkeys and removals are all still there."""
    merged = merge_flag(existing, new)
    if existing.status.is_open and merged is not None and merged.old_upn == existing.old_upn \
            and merged.detected_at == existing.detected_at:
        assert set(existing.passkey_ids) <= set(merged.passkey_ids)
        assert merged.removed_passkeys == existing.removed_passkeys


@fast
@given(st.text(max_size=20).filter(bool), st.lists(ids, max_size=1), st.sampled_from(SOURCES), times)
def test_first_sight_never_flags(upn: str, passkey_lists: list[list[str]], source: str, at: datetime) -> None:
    """With no snapshot, decide_change never flags, whatever the passkeys."""
    passkeys = [pk(p) for p in (passkey_lists[0] if passkey_lists else [])]
    decision = decide_change(USER, upn, None, passkeys, source=source, detected_at=at)
    assert decision.kind == DecisionKind.SEED and decision.flag is None


@fast
@given(stored_flags(), ids, times)
def test_track_only_makes_allowed_moves(flag: Flag, current: list[str], now: datetime) -> None:
    """Whatever the passkeys, track moves only along TRANSITIONS, and `changed` says whether it moved."""
    result = track(flag, [pk(p) for p in current], now)
    assert result.changed == (result.new_status != flag.status)
    assert result.flag.status == result.new_status
    if result.changed:
        assert result.new_status in TRANSITIONS[flag.status]
