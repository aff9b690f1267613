"""UPN-change decisions and the life of a flag: pure functions over plain data (the flag record itself
and its JSON codec are in `shared.upn.flag`).

A passkey is bound to the UPN the user had when it was registered; after a UPN change it stops working
and the user must delete it and register a new one. This module decides who to flag and follows each
flag until the user has done that. It reads nothing and writes nothing: the processor, sweep and
tracker fetch users and passkeys, call these functions, and store what they return.

Deciding on one observed user (decide_change), against the last UPN we recorded for them (the snapshot):

    no snapshot                  -> seed         record the snapshot, flag no one (first sight)
    same UPN, ignoring case      -> unchanged    (a case-only change just rewrites the snapshot)
    changed, holds passkeys      -> flag         record the snapshot, open a `pending` flag
    changed, no passkeys         -> rename_only  record the snapshot; nothing is broken

Flag fast, enrich slowly: when Graph's registration report says a renamed user holds a passkey, the
processor opens their case at once with holder_flag (``pending``, no passkeys, details pending) instead of
reading their passkeys (authentication-method reads are slow); a slow lane reads them later and calls
complete_details. While its details are pending an open case is never tracked or cleaned (its pre-change
passkeys are not known yet); complete_details fills them in, and may close the case straight away:

    details read, no pre-change passkey, a newer one   -> resolved   (re-registered before the read)
    details read, no passkey at all, none known        -> dismissed  (the report was out of date)
    details read, only passkeys that work again        -> dismissed  (the UPN had changed back)
    details read, a removed case gained passkeys       -> pending
    otherwise                                          -> status unchanged; the tracker takes it on

Flag status (one flag row per user; "pre-change passkeys" = those held when the change was detected):

    (flag) ──► pending ──── mark_removed ────► removed
                 │  ▲                               │
                 │  └──── a further rename ─────────┤   (breaks passkeys registered meanwhile)
                 │                                  │
                 ├──► resolved ◄────────────────────┤   every pre-change passkey is gone and another exists
                 │                                  │   (or, details read, none was held, only newer ones)
                 ├──► dismissed ◄───────────────────┘   user deleted, or the UPN changed back before they
                 │                                      re-registered (their old passkeys work again), or,
                 │                                      details read, the user holds no passkey at all
                 └──► cleared                           every pre-change passkey is gone and none other: the
                                                        user removed theirs; nothing is broken any more, and
                                                        whether they should enrol again is the passkey
                                                        policy's business, not this case's

``pending`` and ``removed`` are open; ``resolved``, ``dismissed`` and ``cleared`` are closed (terminal: a
later rename opens a new case). ``removed`` goes back to ``pending`` when a further rename breaks
passkeys registered in the meantime. ``removed`` never becomes ``cleared``: we took the passkeys away,
so the case stays open until the user registers a new one. TRANSITIONS is the table; ``transition``
refuses anything else.

Merging a new detection into the stored flag (merge_flag), for idempotency and one open case per user:

* no stored flag -> the new one;
* open, same new UPN -> None (a duplicate: nothing to write), details pending or not;
* open, renamed again (A→B, then B→C) -> one case A→C: the original old UPN, detection time and
  pre-change passkeys are kept, and passkeys registered under B (now broken too) are added; when the new
  detection's details are pending, so are the case's (since that detection: the passkeys registered under
  B must be read); a stored case whose details are pending keeps them pending, whatever the new one
  brings, until complete_details runs;
* open, renamed back (A→B, then B→A) -> ``dismissed``, unless passkeys registered under B are now
  broken, in which case those open a new case B→A; when the new detection's details are pending, a new
  case B→A whose details are pending, leaving out passkeys registered before the A→B case's detection;
* closed -> a new case, unless it is the same change again (same new UPN, detected no later than the
  case last changed status) -> None.

The opt-in cleanup (REMOVE_STALE_PASSKEYS; removable_passkeys, needs_approval) deletes a ``pending``
flag's pre-change passkeys only when they were created before the product last read the old UPN from
Graph (``oldUpnSeenAt``), never when only a ticket named the old UPN, and at most a capped number per
run: beyond it the flag waits (``removalApproval: required``) until an administrator approves it.
``removalHold`` records why nothing was deleted (the HOLD_* codes).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.upn.flag import (
    APPROVAL_REQUIRED,
    APPROVED,
    MAX_HISTORY,
    SOURCES,
    Flag,
    FlagStatus,
    HistoryEntry,
    PasskeyRef,
    utc,
)

#: ``removalHold``: why the tracker deleted none of a pending flag's pre-change passkeys (also counted per run).
HOLD_AUDIT_MODE = "auditMode"  # ENFORCEMENT_MODE=audit: the tracker writes nothing to Graph
HOLD_FROM_TICKET = "oldUpnFromTicket"  # only a ticket vouched for the old UPN: never enough to delete
HOLD_SEEN_AT_UNKNOWN = "oldUpnSeenAtUnknown"  # no record of when the old UPN was last read (older flags)
HOLD_NOT_OLDER = "passkeysNotOlderThanOldUpn"  # each remaining passkey may have been registered after the rename
HOLD_APPROVAL = "approvalRequired"  # the run's cap was reached: waits for an approval
HOLD_USER_NOT_FOUND = "userNotFound"  # the re-read before deleting found no user
#: Graph's createdDateTime and our clock may disagree a little, Graph rounds to the second, and a read may
#: come from a replica a few seconds behind: a passkey must be older than the last sight of the old UPN by
#: this much to be taken as registered under it.
CLOCK_MARGIN = timedelta(minutes=1)
#: The only status changes `transition` allows.
TRANSITIONS: Mapping[FlagStatus, frozenset[FlagStatus]] = {
    FlagStatus.PENDING: frozenset({FlagStatus.RESOLVED, FlagStatus.REMOVED, FlagStatus.DISMISSED,
                                   FlagStatus.CLEARED}),
    FlagStatus.REMOVED: frozenset({FlagStatus.RESOLVED, FlagStatus.DISMISSED, FlagStatus.PENDING}),
    FlagStatus.RESOLVED: frozenset(),
    FlagStatus.DISMISSED: frozenset(),
    FlagStatus.CLEARED: frozenset(),
}


class DecisionKind(StrEnum):
    """What decide_change concluded about one user."""

    SEED = "seed"
    UNCHANGED = "unchanged"
    FLAG = "flag"
    RENAME_ONLY = "rename_only"


@dataclass(frozen=True)
class Decision:
    """The outcome of decide_change: what to record and whether to open a flag.

    ``upn`` is the user's current UPN (what the snapshot should hold), ``previous_upn`` the snapshot we
    compared with; write the snapshot when ``write_snapshot``; merge ``flag`` (when set) into the stored
    one with merge_flag.
    """

    kind: DecisionKind
    user_id: str
    upn: str
    previous_upn: str | None
    write_snapshot: bool
    flag: Flag | None = None


@dataclass(frozen=True)
class TrackResult:
    """The outcome of track: the status the flag should have, whether that is a change, why, and the
    updated flag (the same object when nothing changed)."""

    new_status: FlagStatus
    changed: bool
    note: str
    flag: Flag = field(repr=False)


# --- helpers -------------------------------------------------------------------------------------


def same_upn(a: str | None, b: str | None) -> bool:
    """UPNs compare without regard to case, as Entra does."""
    return a is not None and b is not None and a.lower() == b.lower()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def passkey_refs(passkeys: Iterable[Mapping[str, Any]]) -> tuple[PasskeyRef, ...]:
    """Graph ``fido2Methods`` items (camelCase JSON, or the SDK's snake_case names) as PasskeyRefs.

    Keeps the first of each id, in order. An item without a string ``id`` is a programming error
    (Graph always sends one) and raises ValueError.
    """
    refs: dict[str, PasskeyRef] = {}
    for index, item in enumerate(passkeys):
        if isinstance(item, PasskeyRef):
            refs.setdefault(item.id, item)
            continue
        ident = item.get("id") if isinstance(item, Mapping) else None
        if not isinstance(ident, str) or not ident:
            raise ValueError(f"passkeys[{index}].id: missing")
        refs.setdefault(ident, PasskeyRef(
            id=ident,
            aa_guid=_text(item.get("aaGuid", item.get("aa_guid"))),
            model=_text(item.get("model")),
            created_date_time=_created(item.get("createdDateTime", item.get("created_date_time"))),
            display_name=_text(item.get("displayName", item.get("display_name"))),
        ))
    return tuple(refs.values())


def _created(value: object) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return _text(value)


def _ids(passkeys: Iterable[Mapping[str, Any]] | Iterable[PasskeyRef]) -> list[str]:
    return [p.id for p in passkey_refs(passkeys)]  # type: ignore[arg-type]


def _with_history(flag: Flag, status: FlagStatus, at: datetime, note: str, **changes: Any) -> Flag:
    entry = HistoryEntry(at=at, status=status, note=note)
    if status != flag.status:
        changes["status_changed_at"] = at
    return replace(flag, status=status, history=(*flag.history, entry)[-MAX_HISTORY:], **changes)


def transition(flag: Flag, status: FlagStatus, *, at: datetime, note: str) -> Flag:
    """`flag` moved to `status` at `at`, with a history line. Raises ValueError for a move that
    TRANSITIONS does not allow (including any move out of a closed status)."""
    status = FlagStatus(status)
    if status not in TRANSITIONS[flag.status]:
        raise ValueError(f"a {flag.status} flag cannot become {status}")
    return _with_history(flag, status, utc(at, "at"), note)


def dismiss(flag: Flag, *, at: datetime, note: str) -> Flag:
    """Close an open case as ``dismissed`` (e.g. ``user deleted``); a closed flag is returned unchanged,
    so a replayed deletion writes nothing new."""
    if not flag.status.is_open:
        return flag
    return transition(flag, FlagStatus.DISMISSED, at=at, note=note)


# --- decide --------------------------------------------------------------------------------------


def _checked(user_id: str, current_upn: str, source: str, detected_at: datetime) -> tuple[str, datetime]:
    """decide_change's and holder_flag's argument checks: (the user id lowercased, detected_at in UTC)."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    if not isinstance(current_upn, str) or not current_upn:
        raise ValueError("current_upn must be a non-empty string")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}")
    return user_id.lower(), utc(detected_at, "detected_at")


def decide_change(user_id: str, current_upn: str, snapshot_upn: str | None, passkeys: Sequence[Mapping[str, Any]],
                  *, source: str, detected_at: datetime, ticket_id: str | None = None,
                  old_upn_seen_at: datetime | None = None, old_upn_origin: str = "snapshot") -> Decision:
    """Decide what one observation of a user means (table in the module docstring).

    `passkeys` are the user's current ``fido2Methods`` items; when the UPN changed they are all
    pre-change passkeys (we cannot tell which were registered after the rename but before we saw it,
    so detection should be prompt; the cleanup only deletes those created before `old_upn_seen_at`,
    when the snapshot's UPN was last read from Graph). Never flags on first sight (`snapshot_upn`
    None or empty). `old_upn_origin` is ``ticket`` when only a ticket named the old UPN.
    """
    user_id, detected_at = _checked(user_id, current_upn, source, detected_at)
    if not snapshot_upn:
        return Decision(DecisionKind.SEED, user_id, current_upn, None, write_snapshot=True)
    if same_upn(current_upn, snapshot_upn):
        return Decision(DecisionKind.UNCHANGED, user_id, current_upn, snapshot_upn,
                        write_snapshot=current_upn != snapshot_upn)
    refs = passkey_refs(passkeys)
    if not refs:
        return Decision(DecisionKind.RENAME_ONLY, user_id, current_upn, snapshot_upn, write_snapshot=True)
    flag = Flag(
        user_id=user_id, old_upn=snapshot_upn, new_upn=current_upn, detected_at=detected_at, source=source,
        ticket_id=ticket_id, passkeys=refs, status=FlagStatus.PENDING, status_changed_at=detected_at,
        history=(HistoryEntry(detected_at, FlagStatus.PENDING,
                              f"UPN changed; {len(refs)} passkey(s) registered before the change"),),
        old_upn_seen_at=old_upn_seen_at, old_upn_origin=old_upn_origin,
    )
    return Decision(DecisionKind.FLAG, user_id, current_upn, snapshot_upn, write_snapshot=True, flag=flag)


def holder_flag(user_id: str, current_upn: str, snapshot_upn: str, *, source: str, detected_at: datetime,
                ticket_id: str | None = None, old_upn_seen_at: datetime | None = None,
                old_upn_origin: str = "snapshot") -> Flag:
    """A ``pending`` case opened on the registration report's word that this renamed user holds a passkey,
    before their passkeys are read: no passkeys yet, ``details_pending`` (since `detected_at`) until
    complete_details. The same checks as decide_change; `snapshot_upn` must be a different UPN (a rename)."""
    user_id, detected_at = _checked(user_id, current_upn, source, detected_at)
    if not isinstance(snapshot_upn, str) or not snapshot_upn or same_upn(current_upn, snapshot_upn):
        raise ValueError("snapshot_upn must be the user's previous, different UPN")
    return Flag(
        user_id=user_id, old_upn=snapshot_upn, new_upn=current_upn, detected_at=detected_at, source=source,
        ticket_id=ticket_id, status=FlagStatus.PENDING, status_changed_at=detected_at,
        history=(HistoryEntry(detected_at, FlagStatus.PENDING,
                              "UPN changed; the registration report lists a passkey; details to be read"),),
        old_upn_seen_at=old_upn_seen_at, old_upn_origin=old_upn_origin, details_pending=True,
        details_since=detected_at,
    )


def merge_flag(existing: Flag | None, new: Flag) -> Flag | None:
    """Fold a new detection into the user's stored flag; None means nothing to write (a duplicate).

    Rules in the module docstring. Merging the same detection twice is the same as merging it once:
    ``merge_flag(merge_flag(e, f) or e, f) is None``. Raises ValueError for two different users.
    """
    if existing is None:
        return new
    if existing.user_id.lower() != new.user_id.lower():
        raise ValueError("merge_flag needs two flags of the same user")
    at = max(existing.changed_at, new.detected_at)

    if not existing.status.is_open:
        if same_upn(existing.new_upn, new.new_upn) and new.detected_at <= existing.changed_at:
            return None  # this change is already part of the closed case
        return new
    if same_upn(existing.new_upn, new.new_upn):
        return None
    if same_upn(existing.old_upn, new.new_upn):
        return _renamed_back(existing, new, at)
    return _renamed_again(existing, new, at)


def _renamed_back(existing: Flag, new: Flag, at: datetime) -> Flag:
    """A→B, then B→A: the first passkeys work again, those registered under B do not (a new case B→A)."""
    if new.details_pending:
        # Which passkeys were registered under B is not known yet: complete_details reads them, and those
        # registered before the A→B case's detection (under A) are left out.
        after = existing.details_since if existing.details_pending else existing.detected_at
        return replace(new, details_after=after, history=(*new.history, HistoryEntry(
            new.detected_at, FlagStatus.PENDING,
            f"UPN changed back from {existing.new_upn}; passkeys registered in between to be read")))
    added = _registered_since(existing, new.passkeys)
    if added:
        return replace(new, passkeys=added, history=(*new.history, HistoryEntry(
            new.detected_at, FlagStatus.PENDING,
            f"UPN changed back from {existing.new_upn}; earlier passkeys work again, "
            f"{len(added)} registered in between do not")))
    return _with_history(existing, FlagStatus.DISMISSED, at,
                         "UPN changed back before re-registration; the passkeys work again",
                         new_upn=new.new_upn)


def _registered_since(existing: Flag, passkeys: Iterable[PasskeyRef]) -> tuple[PasskeyRef, ...]:
    """Of `passkeys`, those that are not the open case's pre-change ones: not known to it and, while its
    details are pending, not created by the detection that made them pending (those would be its own)."""
    known = set(existing.passkey_ids)
    cutoff = None if existing.details_since is None else existing.details_since + CLOCK_MARGIN
    return tuple(p for p in passkeys if p.id not in known and (
        cutoff is None or (created := parse_aware_time(p.created_date_time)) is None or created > cutoff))


def _renamed_again(existing: Flag, new: Flag, at: datetime) -> Flag:
    """A→B, then B→C: one case A→C keeping the original old UPN, detection and pre-change passkeys, with
    the passkeys registered under B (broken too) added, or to be read when the new detection's are pending."""
    known = set(existing.passkey_ids)
    added = tuple(p for p in new.passkeys if p.id not in known)
    status = FlagStatus.PENDING if added else existing.status
    note = f"UPN changed again to {new.new_upn}; {len(added)} more passkey(s) broken"
    details: dict[str, Any] = {"details_after": None}  # every passkey registered before this rename is broken
    if new.details_pending:
        assert new.details_since is not None  # set while pending
        since = max(new.details_since, existing.details_since or new.details_since)
        details.update(details_pending=True, details_since=since)
        note = f"UPN changed again to {new.new_upn}; passkeys registered meanwhile to be read"
    return _with_history(
        existing, status, at, note,
        new_upn=new.new_upn, passkeys=(*existing.passkeys, *added),
        ticket_id=existing.ticket_id or new.ticket_id,
        removal_approval=None if added else existing.removal_approval,  # an approval covered the earlier set
        **details,
    )


def complete_details(flag: Flag, passkeys: Sequence[Mapping[str, Any]], *, at: datetime) -> Flag:
    """The slow lane read the user's current ``fido2Methods`` (`passkeys`, as decide_change takes them):
    fill in a details-pending open case; any other flag comes back unchanged (a second delivery writes nothing).

    Pre-change: the case's known passkeys, and those created no later than the detection that made the
    details pending (``details_since``) plus CLOCK_MARGIN, or without a readable ``createdDateTime`` (the
    harsher reading); later ones were registered after the rename and work. After a rename back, those
    created by ``details_after`` (plus the margin) were registered under the UPN the user has again: they
    work again too. Then: no pre-change passkey held and a newer one -> ``resolved``; no passkey at all and
    none known -> ``dismissed``; only passkeys that work again -> ``dismissed``; a ``removed`` case that
    gained passkeys -> ``pending``; otherwise the status stays and the tracker takes it on.
    """
    if not flag.status.is_open or not flag.details_pending:
        return flag
    at = utc(at, "at")
    held = passkey_refs(passkeys)
    pre_change, fresh, back = _sort_read(flag, held)
    known = set(flag.passkey_ids)
    added = tuple(p for p in pre_change if p.id not in known)
    done = _with_history(flag, flag.status, at, f"passkey details read: {len(pre_change)} pre-change passkey(s)",
                         passkeys=(*flag.passkeys, *added), details_pending=False, details_since=None,
                         details_after=None, removal_approval=None if added else flag.removal_approval)
    if not pre_change and fresh:
        return transition(done, FlagStatus.RESOLVED, at=at, note="re-registered before the details were read")
    if not held and not known:
        return transition(done, FlagStatus.DISMISSED, at=at,
                          note="holds no passkey: the registration report was out of date")
    if not pre_change and back and not known:
        return transition(done, FlagStatus.DISMISSED, at=at,
                          note="UPN changed back: the passkeys registered before work again")
    if added and done.status == FlagStatus.REMOVED:
        return transition(done, FlagStatus.PENDING, at=at, note=f"{len(added)} more passkey(s) broken")
    return done


def registered_after(created_date_time: str | None, moment: datetime) -> bool:
    """Whether a passkey was surely registered after `moment` (a rename's detection): created more than
    CLOCK_MARGIN later. A passkey without a readable creation time is not (the harsher reading)."""
    created = parse_aware_time(created_date_time)
    return created is not None and created > moment + CLOCK_MARGIN


def _sort_read(flag: Flag, held: Sequence[PasskeyRef]) -> tuple[list[PasskeyRef], list[PasskeyRef], list[PasskeyRef]]:
    """The passkeys a details-pending flag's user holds, as (pre-change, registered after the rename,
    registered under the UPN the user has again)."""
    assert flag.details_since is not None  # set while pending
    known = set(flag.passkey_ids)
    after = None if flag.details_after is None else flag.details_after + CLOCK_MARGIN
    pre_change: list[PasskeyRef] = []
    fresh: list[PasskeyRef] = []
    back: list[PasskeyRef] = []
    for ref in held:
        created = parse_aware_time(ref.created_date_time)
        if ref.id in known or created is None:
            pre_change.append(ref)
        elif registered_after(ref.created_date_time, flag.details_since):
            fresh.append(ref)
        elif after is not None and created <= after:
            back.append(ref)
        else:
            pre_change.append(ref)
    return pre_change, fresh, back


# --- track ---------------------------------------------------------------------------------------


def track(flag: Flag, current_passkeys: Sequence[Mapping[str, Any]], now: datetime) -> TrackResult:
    """Re-evaluate an open flag against the user's current passkeys.

    * a pre-change passkey is still registered -> no change (the user has not finished);
    * none left and another passkey exists -> ``resolved``;
    * none left and no passkey at all -> ``removed`` stays ``removed`` (we deleted them; waiting for a
      new one), ``pending`` becomes ``cleared`` (the user removed theirs), or ``removed`` if our cleanup
      had deleted any of them.
    Closed flags, and open ones whose passkey details are not read yet, never change here.
    """
    now = utc(now, "now")
    if not flag.status.is_open:
        return TrackResult(flag.status, False, f"case is closed ({flag.status})", flag)
    if flag.details_pending:  # its pre-change passkeys are not known yet: complete_details first
        return TrackResult(flag.status, False, "passkey details not read yet", flag)
    current = _ids(current_passkeys)
    pre_change = set(flag.passkey_ids)
    still = [pid for pid in current if pid in pre_change]
    fresh = [pid for pid in current if pid not in pre_change]

    if still:
        status = flag.status
        note = f"{len(still)} pre-change passkey(s) still registered; {len(fresh)} new"
    elif fresh:
        status = FlagStatus.RESOLVED
        note = f"pre-change passkeys gone; {len(fresh)} new passkey(s) registered"
    elif flag.status == FlagStatus.REMOVED or flag.removed_passkeys:
        status = FlagStatus.REMOVED
        note = "pre-change passkeys removed; waiting for a new passkey"
    else:
        status = FlagStatus.CLEARED
        note = "the user removed the pre-change passkeys and registered none"
    if status == flag.status:
        return TrackResult(status, False, note, flag)
    return TrackResult(status, True, note, transition(flag, status, at=now, note=note))


def stale_passkeys_to_remove(flag: Flag, current_passkeys: Sequence[Mapping[str, Any]]) -> list[str]:
    """Ids of pre-change passkeys the user still has, in the flag's order: what the opt-in cleanup
    (REMOVE_STALE_PASSKEYS) would delete. Empty for a closed flag and while the details are pending."""
    if not flag.status.is_open or flag.details_pending:
        return []
    current = set(_ids(current_passkeys))
    return [pid for pid in flag.passkey_ids if pid in current]


@dataclass(frozen=True)
class RemovalDecision:
    """What the opt-in cleanup may delete of one flag: `ids` (in the flag's order), or why nothing (`hold`)."""

    ids: tuple[str, ...] = ()
    hold: str | None = None


def parse_aware_time(value: object) -> datetime | None:
    """An ISO 8601 time with a zone (a passkey's createdDateTime, a queue entry's seenAt), in UTC; None when
    absent, unreadable or without a zone (a naive time cannot be compared safely)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


def removable_passkeys(flag: Flag, current_passkeys: Sequence[Mapping[str, Any]]) -> RemovalDecision:
    """The pre-change passkeys the cleanup may delete: only those of a ``pending`` flag whose old UPN the
    product itself read from Graph (never a ticket's word alone), and only those whose ``createdDateTime``
    is older than that reading by CLOCK_MARGIN, so a passkey registered after the rename (it works) is
    never touched. A passkey without a readable ``createdDateTime`` is kept. Nothing to delete and
    nothing held: an empty decision (so too while the passkey details are pending)."""
    if flag.status != FlagStatus.PENDING or flag.details_pending:
        return RemovalDecision()
    stale = stale_passkeys_to_remove(flag, current_passkeys)
    if not stale:
        return RemovalDecision()
    if flag.old_upn_origin == "ticket":
        return RemovalDecision(hold=HOLD_FROM_TICKET)
    if flag.old_upn_seen_at is None:
        return RemovalDecision(hold=HOLD_SEEN_AT_UNKNOWN)
    created = {p.id: parse_aware_time(p.created_date_time) for p in flag.passkeys}
    created.update((p.id, parse_aware_time(p.created_date_time)) for p in passkey_refs(current_passkeys))
    cutoff = flag.old_upn_seen_at - CLOCK_MARGIN
    ids = tuple(pid for pid in stale if (when := created.get(pid)) is not None and when < cutoff)
    return RemovalDecision(ids=ids) if ids else RemovalDecision(hold=HOLD_NOT_OLDER)


def needs_approval(flag: Flag, count: int, budget_left: int) -> bool:
    """Whether deleting `count` passkeys of this flag must wait for an administrator: an approved flag
    never waits (the cap does not apply to it); a waiting one waits until approved, even in a later run
    with room; otherwise it waits when the run's remaining budget (passkeys) is smaller than `count`:
    a user's passkeys are deleted together or not at all."""
    if flag.removal_approval == APPROVED:
        return False
    return flag.removal_approval == APPROVAL_REQUIRED or count > budget_left


def hold_removal(flag: Flag, hold: str | None, *, at: datetime) -> Flag:
    """Record why the cleanup deleted nothing this time (None: nothing held); a history line only when the
    reason changes, so a flag that keeps waiting is not rewritten every run."""
    if hold == flag.removal_hold:
        return flag
    if hold is None:
        return replace(flag, removal_hold=None)
    return _with_history(flag, flag.status, utc(at, "at"), f"stale passkeys not removed: {hold}",
                         removal_hold=hold)


def require_approval(flag: Flag, *, at: datetime, cap: int) -> Flag:
    """The run's cap is reached: the flag waits (``removalApproval: required``) until approved."""
    if flag.removal_approval == APPROVAL_REQUIRED:
        return hold_removal(flag, HOLD_APPROVAL, at=at)
    return _with_history(flag, flag.status, utc(at, "at"),
                         f"stale passkeys wait for an approval: more than {cap} deletion(s) in one run",
                         removal_approval=APPROVAL_REQUIRED, removal_hold=HOLD_APPROVAL)


def approve_removal(flag: Flag, *, at: datetime, by: str) -> Flag:
    """An administrator approved deleting this waiting flag's stale passkeys (the next tracker run does).
    Approving an approved flag returns it unchanged; any other flag raises ValueError."""
    if flag.removal_approval == APPROVED and flag.status == FlagStatus.PENDING:
        return flag
    if flag.removal_approval != APPROVAL_REQUIRED or flag.status != FlagStatus.PENDING:
        raise ValueError("the flag is not waiting for a removal approval")
    return _with_history(flag, flag.status, utc(at, "at"), f"stale passkey removal approved ({by})",
                         removal_approval=APPROVED)


def mark_removed(flag: Flag, removed_ids: Iterable[str], *, at: datetime) -> Flag:
    """Record that our cleanup deleted these pre-change passkeys: ``pending`` -> ``removed``.

    Idempotent (ids already recorded are not added twice; nothing new returns `flag` itself). Raises
    ValueError for an id that is not a pre-change passkey of this flag, for a closed flag, or for one whose
    passkey details are pending: we must never delete anything else. Call track afterwards to resolve when
    a new passkey already exists.
    """
    at = utc(at, "at")
    ids = list(dict.fromkeys(removed_ids))
    pre_change = set(flag.passkey_ids)
    if any(pid not in pre_change for pid in ids):
        raise ValueError("mark_removed got an id that is not a pre-change passkey of this flag")
    recorded = set(flag.removed_passkeys)
    new_ids = tuple(pid for pid in ids if pid not in recorded)
    if not new_ids:
        return flag
    if not flag.status.is_open:
        raise ValueError(f"a {flag.status} flag cannot record removed passkeys")
    if flag.details_pending:
        raise ValueError("a flag whose passkey details are pending cannot record removed passkeys")
    return _with_history(flag, FlagStatus.REMOVED, at, f"removed {len(new_ids)} pre-change passkey(s)",
                         removed_passkeys=(*flag.removed_passkeys, *new_ids))


__all__ = [
    "CLOCK_MARGIN", "TRANSITIONS", "Decision", "DecisionKind", "RemovalDecision", "TrackResult", "approve_removal",
    "complete_details", "decide_change", "dismiss", "hold_removal", "holder_flag", "mark_removed", "merge_flag",
    "needs_approval", "parse_aware_time", "passkey_refs", "registered_after", "removable_passkeys",
    "require_approval", "same_upn", "stale_passkeys_to_remove", "track", "transition",
]
