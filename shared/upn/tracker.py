"""The re-registration tracker: moves open flags on as users re-register their passkeys, and (with
REMOVE_STALE_PASSKEYS) deletes the pre-change passkeys the cleanup rule allows, within a cap per run
above which an administrator approves (`approve_removals`).
"""
from __future__ import annotations

import logging
from typing import Any

from shared.errors import ConcurrencyError, RemovalNotWaiting
from shared.graph.passkeys import delete_passkeys, read_passkeys
from shared.graph.users import current_upns
from shared.services import Services
from shared.upn.clock import now as _now
from shared.upn.decide import (
    APPROVAL_REQUIRED,
    HOLD_AUDIT_MODE,
    HOLD_USER_NOT_FOUND,
    Flag,
    FlagStatus,
    approve_removal,
    dismiss,
    flag_from_dict,
    flag_to_dict,
    hold_removal,
    mark_removed,
    needs_approval,
    removable_passkeys,
    require_approval,
    same_upn,
    track,
)
from shared.upn.messages import USERS_PER_MESSAGE

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

    Returns counts, with ``removalHeld`` (hold code -> flags) and ``awaitingApproval``.
    """
    await services.graph.confirm_tenant()  # the right tenant before any storage read or write (wrongTenant)
    tenant = services.settings.tenant_id
    settings = services.settings
    open_flags: list[dict[str, Any]] = []
    for status in (FlagStatus.PENDING, FlagStatus.REMOVED):
        async for doc in services.store.iter_flags(tenant, status.value):
            open_flags.append(doc)
    counts: dict[str, Any] = {"checked": 0, "changed": 0, "removedPasskeys": 0, "awaitingApproval": 0,
                              "removalHeld": {}}
    budget = settings.stale_passkey_removal_max_per_run
    for start in range(0, len(open_flags), USERS_PER_MESSAGE):
        chunk = open_flags[start:start + USERS_PER_MESSAGE]
        current = await read_passkeys(services.graph, [d["userId"] for d in chunk])
        flags: dict[str, Flag] = {}
        planned: dict[str, list[str]] = {}
        for doc in chunk:
            counts["checked"] += 1
            flag = flag_from_dict(doc)
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
        for doc in chunk:
            flag = flags[flag_from_dict(doc).user_id]
            result = track(flag, current.get(flag.user_id, []), _now())
            if result.flag != flag_from_dict(doc):
                try:
                    await services.store.update_flag(tenant, flag_to_dict(result.flag), doc["etag"])
                    counts["changed"] += 1
                except ConcurrencyError:
                    log.info("flag of %s changed meanwhile; next round", flag.user_id)
    return counts


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
    tenant = services.settings.tenant_id
    if user_ids is None:
        docs = [d async for d in services.store.iter_flags(tenant, FlagStatus.PENDING.value)
                if d.get("removalApproval") == APPROVAL_REQUIRED]
    else:
        ids = list(dict.fromkeys(u.lower() for u in user_ids))
        found = [await services.store.get_flag(tenant, uid) for uid in ids]
        refused = [uid for uid, doc in zip(ids, found, strict=True)
                   if doc is None or doc.get("status") != FlagStatus.PENDING.value
                   or doc.get("removalApproval") not in (APPROVAL_REQUIRED, "approved")]
        if refused:
            raise RemovalNotWaiting(f"userIds: no flag waiting for a removal approval: {', '.join(refused)}")
        docs = [d for d in found if d is not None]
    approved: list[str] = []
    already: list[str] = []
    for doc in docs:
        flag = flag_from_dict(doc)
        updated = approve_removal(flag, at=_now(), by=by)
        if updated is flag:
            already.append(flag.user_id)
            continue
        await services.store.update_flag(tenant, flag_to_dict(updated), doc["etag"])
        approved.append(flag.user_id)
    return {"approved": approved, "alreadyApproved": already}


async def track_flags_of(services: Services, user_ids: list[str]) -> None:
    """Re-evaluate the open flags of some users now (the tracker's rule, for a recheck ticket)."""
    tenant = services.settings.tenant_id
    current = await read_passkeys(services.graph, user_ids)
    for uid in user_ids:
        doc = await services.store.get_flag(tenant, uid.lower())
        if not doc or not FlagStatus(doc["status"]).is_open:
            continue
        result = track(flag_from_dict(doc), current.get(uid, []), _now())
        if result.changed:
            await services.store.update_flag(tenant, flag_to_dict(result.flag), doc["etag"])
