"""The re-registration tracker: moves open flags on as users re-register their passkeys, and (with
REMOVE_STALE_PASSKEYS) deletes the pre-change passkeys the cleanup rule allows, within a cap per run
above which an administrator approves (`approve_removals`).

One rule, two callers: the timer runs it over every open flag (`track_flags`), a recheck ticket over
one user's (`track_flags_of`).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from shared.errors import ConcurrencyError, RemovalNotWaiting
from shared.graph.passkeys import delete_passkeys, read_passkeys
from shared.graph.users import current_upns
from shared.services import Services
from shared.upn.clock import now as _now
from shared.upn.decide import (
    HOLD_AUDIT_MODE,
    HOLD_USER_NOT_FOUND,
    approve_removal,
    dismiss,
    hold_removal,
    mark_removed,
    needs_approval,
    removable_passkeys,
    require_approval,
    same_upn,
    track,
)
from shared.upn.flag import APPROVAL_REQUIRED, APPROVED, Flag, FlagStatus
from shared.upn.messages import USERS_PER_MESSAGE

if TYPE_CHECKING:
    from shared.state import StoredFlag

log = logging.getLogger(__name__)


async def track_flags(services: Services) -> dict[str, Any]:
    """Move open flags on: resolved once the pre-change passkeys are gone and a new one exists.

    With REMOVE_STALE_PASSKEYS on, the pre-change passkeys of a pending flag that `removable_passkeys`
    allows (created before the old UPN was last read from Graph; never on a ticket's word) are deleted
    (the seed's "Disable a passkey") and the flag records which, with these guards:

    * ``ENFORCEMENT_MODE=audit`` deletes nothing (``removalHold: auditMode``): audit mode writes nothing
      to Graph;
    * at most STALE_PASSKEY_REMOVAL_MAX_PER_RUN passkeys a run; a flag that would go over waits
      (``removalApproval: required``) until approved (`approve_removals`); approved flags do not count;
    * each user is re-read right before the deletion: back on the old UPN, nothing is deleted and the
      case is dismissed (the old passkeys work again).

    Flags whose passkey details are pending are skipped (counted as ``detailsPending``): the slow lane
    reads their passkeys first.

    Returns counts, with ``removalHeld`` (hold code -> flags), ``awaitingApproval`` and ``detailsPending``.
    """
    await services.graph.confirm_tenant()  # the right tenant before any storage read or write (wrongTenant)
    open_flags: list[StoredFlag] = []
    for status in (FlagStatus.PENDING, FlagStatus.REMOVED):
        async for stored in services.store.flags.every(status.value):
            open_flags.append(stored)
    return await _track(services, open_flags)


async def track_flags_of(services: Services, user_ids: list[str]) -> dict[str, Any]:
    """The tracker's run for some users' open flags now (a recheck ticket): the same rule as `track_flags`,
    stale-passkey removal and its guards included, with a cap of its own."""
    await services.graph.confirm_tenant()
    found = [await services.store.flags.get(uid) for uid in dict.fromkeys(u.lower() for u in user_ids)]
    return await _track(services, [s for s in found if s is not None and s.flag.status.is_open])


async def _track(services: Services, open_flags: list[StoredFlag]) -> dict[str, Any]:
    """One tracker run over these stored open flags, 20 users a `$batch`; returns its counts. Flags whose
    passkey details are pending are left to the slow lane (``detailsPending``): their pre-change passkeys are
    not known yet, so their passkeys are not read here, and nothing is tracked or removed."""
    waiting = [s for s in open_flags if s.flag.details_pending]
    ready = [s for s in open_flags if not s.flag.details_pending]
    counts: dict[str, Any] = {"checked": 0, "changed": 0, "removedPasskeys": 0, "awaitingApproval": 0,
                              "removalHeld": {}, "detailsPending": len(waiting)}
    budget = services.settings.stale_passkey_removal_max_per_run
    for start in range(0, len(ready), USERS_PER_MESSAGE):
        budget = await _track_chunk(services, ready[start:start + USERS_PER_MESSAGE], budget, counts)
    return counts


async def _track_chunk(services: Services, chunk: list[StoredFlag], budget: int, counts: dict[str, Any]
                       ) -> int:
    """Track up to 20 flags: read their passkeys, remove what the rule allows, write what changed. Returns
    the run's removal budget left."""
    settings = services.settings
    current = await read_passkeys(services.graph, [s.flag.user_id for s in chunk])
    flags: dict[str, Flag] = {}
    planned: dict[str, list[str]] = {}
    for stored in chunk:
        counts["checked"] += 1
        flag = stored.flag
        if settings.remove_stale_passkeys and flag.status == FlagStatus.PENDING:
            flag, ids = _plan_removal(flag, current.get(flag.user_id, []), settings.enforcement_mode,
                                      budget, settings.stale_passkey_removal_max_per_run)
            if ids:
                planned[flag.user_id] = ids
                if flag.removal_approval is None:
                    budget -= len(ids)
            elif flag.removal_approval == APPROVAL_REQUIRED:
                counts["awaitingApproval"] += 1
            elif flag.removal_hold:
                counts["removalHeld"][flag.removal_hold] = counts["removalHeld"].get(flag.removal_hold, 0) + 1
        flags[flag.user_id] = flag
    if planned:
        counts["removedPasskeys"] += await _remove_planned(services, planned, flags, current, counts)
    for stored in chunk:
        user_id = stored.flag.user_id
        result = track(flags[user_id], current.get(user_id, []), _now())
        if result.flag != stored.flag:
            try:
                await services.store.flags.update(result.flag, stored.etag,
                                                 created_at=stored.created_at)
                counts["changed"] += 1
            except ConcurrencyError:
                log.info("flag of %s changed meanwhile; next round", user_id)
    return budget


def _plan_removal(flag: Flag, passkeys: list[dict[str, Any]], mode: str, budget: int, cap: int
                  ) -> tuple[Flag, list[str]]:
    """One pending flag's cleanup decision for this run: (the flag with its hold/approval state, the
    passkey ids to delete once the user is re-read). Nothing is deleted in audit mode."""
    now = _now()
    decision = removable_passkeys(flag, passkeys)
    if not decision.ids:
        return hold_removal(flag, decision.hold, at=now), []
    if mode == "audit":
        log.info("stale passkeys of %s not removed: %s", flag.user_id, HOLD_AUDIT_MODE)
        return hold_removal(flag, HOLD_AUDIT_MODE, at=now), []
    if needs_approval(flag, len(decision.ids), budget):
        log.info("stale passkeys of %s wait for an approval (cap %d a run)", flag.user_id, cap)
        return require_approval(flag, at=now, cap=cap), []
    return flag, list(decision.ids)


async def _remove_planned(services: Services, planned: dict[str, list[str]], flags: dict[str, Flag],
                          current: dict[str, list[dict[str, Any]]], counts: dict[str, Any]) -> int:
    """Re-read the users, then delete each one's planned passkeys unless their UPN is back to the old one
    (then the case is dismissed) or they are gone. Updates `flags` and `current`; returns how many went."""
    upns = await current_upns(services.graph, list(planned))
    removed = 0
    for uid, ids in planned.items():
        flag, now = flags[uid], _now()
        upn = upns.get(uid)
        if upn is None:
            flags[uid] = hold_removal(flag, HOLD_USER_NOT_FOUND, at=now)
            counts["removalHeld"][HOLD_USER_NOT_FOUND] = counts["removalHeld"].get(HOLD_USER_NOT_FOUND, 0) + 1
            continue
        if same_upn(upn, flag.old_upn):
            log.info("UPN of %s is back to the old one; nothing removed, case dismissed", uid)
            flags[uid] = dismiss(flag, at=now, note="UPN changed back before removal; nothing deleted, the "
                                                    "passkeys work again")
            continue
        await delete_passkeys(services.graph, uid, ids)
        removed += len(ids)
        flags[uid] = hold_removal(mark_removed(flag, ids, at=now), None, at=now)
        current[uid] = [p for p in current.get(uid, []) if p.get("id") not in set(ids)]
    return removed


async def approve_removals(services: Services, user_ids: list[str] | None, *, by: str) -> dict[str, Any]:
    """An administrator's approval: the named flags (or, with None, every waiting one) may have their stale
    passkeys deleted by the next tracker run, whatever the cap. Every named flag must be waiting (or already
    approved: a replay changes nothing); otherwise RemovalNotWaiting names them and nothing is written."""
    if user_ids is None:
        waiting = [s async for s in services.store.flags.every(FlagStatus.PENDING.value)
                if s.flag.removal_approval == APPROVAL_REQUIRED]
    else:
        ids = list(dict.fromkeys(u.lower() for u in user_ids))
        found = [await services.store.flags.get(uid) for uid in ids]
        refused = [uid for uid, stored in zip(ids, found, strict=True)
                   if stored is None or stored.flag.status != FlagStatus.PENDING
                   or stored.flag.removal_approval not in (APPROVAL_REQUIRED, APPROVED)]
        if refused:
            raise RemovalNotWaiting(f"userIds: no flag waiting for a removal approval: {', '.join(refused)}")
        waiting = [s for s in found if s is not None]
    approved: list[str] = []
    already: list[str] = []
    for stored in waiting:
        flag = stored.flag
        updated = approve_removal(flag, at=_now(), by=by)
        if updated is flag:
            already.append(flag.user_id)
            continue
        await services.store.flags.update(updated, stored.etag, created_at=stored.created_at)
        approved.append(flag.user_id)
    return {"approved": approved, "alreadyApproved": already}
