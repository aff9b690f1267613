"""The idempotent processor: one `users` message of at most 20 users, compared with the UPN snapshot.

    message --> current UPN (from the message, else one $batch of GET users)
            --> snapshot (the message's `oldUpn`, else Table) --> changed users only:
    inline (a ticket's one user):  one $batch of fido2Methods --> decide_change --> merge_flag --> flag writes
    queued (the queue trigger):    holders index --> holders flagged now, details pending (holder_flag)
                                   --> every changed user to the `passkey-reads` slow lane (passkey_reads.py)
            --> snapshot writes

Authentication-method reads may be a few a second per tenant, so the queue trigger never waits on them:
users the registration report lists as passkey holders (`services.store.holders`) are flagged at once, and
the slow lane reads every changed user's passkeys at the pace Graph allows, completing those flags and
flagging anyone the report did not know yet.

Flags and slow-lane messages are written before the snapshot, so a crash between them re-detects the
change on the next delivery and `merge_flag` turns it into a no-op (the slow lane's reads are idempotent
too). The same change delivered twice, or by two sources, makes one flag. Users Graph no longer has (404)
have their open case dismissed and their snapshot forgotten. Decisions are made in `decide.py`; this module
does the I/O.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.errors import ConcurrencyError
from shared.graph.passkeys import read_passkeys
from shared.graph.users import current_upns
from shared.services import Services
from shared.upn.clock import iso
from shared.upn.clock import now as _now
from shared.upn.decide import DecisionKind, decide_change, dismiss, holder_flag, merge_flag, parse_aware_time, same_upn
from shared.upn.flag import Flag
from shared.upn.messages import USERS_PER_MESSAGE, passkey_reads_message, send_messages

#: The processor's outcome for a changed user whose passkeys the slow lane reads (`queued_reads`).
DEFERRED = "deferred"

log = logging.getLogger(__name__)


async def save_flag(services: Services, candidate: Flag) -> Flag | None:
    """Merge `candidate` into the stored flag and write it with ETag concurrency; None: nothing new."""
    for _ in range(5):
        stored = await services.store.flags.get(candidate.user_id)
        merged = merge_flag(stored.flag if stored else None, candidate)
        if merged is None:
            return None
        try:
            if stored is None:
                if await services.store.flags.create([merged]):
                    return merged
                continue  # somebody created it first: merge with theirs
            await services.store.flags.update(merged, stored.etag, created_at=stored.created_at)
            return merged
        except ConcurrencyError:
            continue
    raise ConcurrencyError(f"flag of user {candidate.user_id} kept changing under us")


async def _save_flags(services: Services, candidates: list[Flag]) -> list[Flag]:
    """`save_flag` for many users at once. First try: create them all as new cases, one transaction
    per bucket and no read (`merge_flag` with nothing stored is the candidate itself); users who already
    have a flag go through `save_flag` (read, merge, create or ETag-update)."""
    if not candidates:
        return []
    created = set(await services.store.flags.create(candidates))
    written = [c for c in candidates if c.user_id in created]
    again = [c for c in candidates if c.user_id not in created]
    if again:
        written += [f for f in await asyncio.gather(*(save_flag(services, c) for c in again)) if f is not None]
    return written


@dataclass
class _Users:
    """A message's users: those to compare (current UPN, or None until read from Graph) and those deleted."""

    current: dict[str, str | None] = field(default_factory=dict)
    seen: dict[str, datetime] = field(default_factory=dict)  # when each current UPN was read from Graph
    removed: list[str] = field(default_factory=list)
    known: dict[str, str] = field(default_factory=dict)  # old UPNs the message carries (the sweep compared)
    known_seen: dict[str, datetime] = field(default_factory=dict)  # and when the snapshot had last seen them


def _message_users(users: list[dict[str, Any]]) -> _Users:
    """The message's entries (`{"id", "upn"?, "oldUpn"?, "oldUpnSeenAt"?, "seenAt"?, "removed"?}`), by user."""
    out = _Users()
    for entry in users:
        uid = str(entry["id"]).lower()
        if entry.get("removed"):
            out.removed.append(uid)
            continue
        out.current[uid] = entry.get("upn")
        if isinstance(entry.get("oldUpn"), str) and entry["oldUpn"]:
            out.known[uid] = entry["oldUpn"]
            if (was := parse_aware_time(entry.get("oldUpnSeenAt"))) is not None:
                out.known_seen[uid] = was
        if entry.get("upn") and (at := parse_aware_time(entry.get("seenAt"))) is not None:
            out.seen[uid] = at
    return out


async def _read_missing_upns(services: Services, users: _Users, now: datetime) -> None:
    """Read from Graph the current UPN of users the message names by id only; a 404 means deleted."""
    unknown = [uid for uid, upn in users.current.items() if not upn]
    if unknown:
        for uid, upn in (await current_upns(services.graph, unknown)).items():
            if upn is None:
                users.removed.append(uid)
                users.current.pop(uid, None)
            else:
                users.current[uid] = upn
                users.seen[uid] = now


async def process_users(services: Services, users: list[dict[str, Any]], *, source: str,
                        ticket_id: str | None = None, old_upn_hint: str | None = None,
                        queued_reads: bool = False) -> dict[str, Any]:
    """Compare each user's UPN with the snapshot and flag those who changed and hold passkeys; with
    `queued_reads`, changed users' passkeys are left to the slow lane (holders flagged at once)."""
    now = _now()  # taken before any read: a UPN read below was current at this moment or later
    message = _message_users(users)
    await _read_missing_upns(services, message, now)
    current, seen, removed, known = message.current, message.seen, message.removed, message.known

    unread = [uid for uid in current if uid not in known]
    stored = await services.store.snapshots.get_seen(unread) if unread else {}
    snapshots = {uid: upn for uid, (upn, _) in stored.items()}
    snapshots.update((uid, known[uid]) for uid in current if uid in known)
    origins: dict[str, str] = {}
    if old_upn_hint and len(current) == 1:
        (uid,) = current
        if uid not in snapshots:
            snapshots[uid] = old_upn_hint  # a ticket may tell us the old UPN we never saw
            origins[uid] = "ticket"
    changed = [uid for uid, upn in current.items() if snapshots.get(uid) and not same_upn(snapshots[uid], upn)]
    old_seen = await _old_upn_seen(services, changed, snapshots, stored, origins, message.known_seen)
    holders = await services.store.holders.get(changed) if queued_reads and changed else set()
    passkeys = {} if queued_reads else await read_passkeys(services.graph, changed)

    outcome: dict[str, list[str]] = {}
    flags: list[Flag] = []
    snapshot_writes: dict[str, str] = {}
    for uid, upn in current.items():
        change: dict[str, Any] = {"source": source, "detected_at": now, "ticket_id": ticket_id,
                                  "old_upn_seen_at": old_seen.get(uid), "old_upn_origin": origins.get(uid, "snapshot")}
        decision = decide_change(uid, str(upn), snapshots.get(uid), passkeys.get(uid, []), **change)
        kind, flag = decision.kind.value, decision.flag
        if uid in holders:
            kind, flag = DecisionKind.FLAG.value, holder_flag(uid, str(upn), snapshots[uid], **change)
        elif queued_reads and decision.kind == DecisionKind.RENAME_ONLY:
            kind = DEFERRED  # the slow lane reads their passkeys and decides
        outcome.setdefault(kind, []).append(uid)
        if flag is not None:
            flags.append(flag)
        if decision.write_snapshot or (decision.kind == DecisionKind.UNCHANGED and uid in seen):
            snapshot_writes[uid] = decision.upn  # unchanged: records that the UPN was confirmed just now

    written = await _save_flags(services, flags)
    if queued_reads and changed:
        await _queue_reads(services, changed, current, snapshots, old_seen, origins, holders, now,
                           source=source, ticket_id=ticket_id)
    if snapshot_writes:
        await services.store.snapshots.put(snapshot_writes, seen)
    if removed:
        await _forget_users(services, removed, now)
    return {"processed": len(current), "removed": len(removed), "flagged": [f.user_id for f in written],
            "deferred": len(changed) if queued_reads else 0, "decisions": outcome}


async def _queue_reads(services: Services, changed: list[str], current: Mapping[str, str | None],
                       snapshots: Mapping[str, str], old_seen: Mapping[str, datetime], origins: Mapping[str, str],
                       holders: set[str], now: datetime, *, source: str, ticket_id: str | None) -> None:
    """Every changed user to the slow lane, 20 a message: holders to complete their flag's details, the
    others to be flagged if they hold a passkey the report did not show."""
    entries = [{"id": uid, "upn": str(current[uid]), "oldUpn": snapshots[uid], "detectedAt": iso(now),
                **({"oldUpnSeenAt": iso(old_seen[uid])} if uid in old_seen else {}),
                **({"oldUpnOrigin": origins[uid]} if uid in origins else {}),
                **({"holder": True} if uid in holders else {})} for uid in changed]
    messages = [passkey_reads_message(entries[i:i + USERS_PER_MESSAGE], source=source, ticket_id=ticket_id)
                for i in range(0, len(entries), USERS_PER_MESSAGE)]
    await send_messages(services, messages, queue=services.store.passkey_reads)


async def _old_upn_seen(services: Services, changed: list[str], snapshots: Mapping[str, str],
                        stored: Mapping[str, tuple[str, datetime | None]], origins: Mapping[str, str],
                        carried: Mapping[str, datetime]) -> dict[str, datetime]:
    """When the product last read each changed user's old UPN from Graph: the time kept with the
    snapshot, only while the snapshot still holds that UPN. A sweep message carries it (`carried`) with
    the old UPN; other users' rows are read here. Users whose old UPN only a ticket gave have none."""
    stored = {**stored, **{uid: (snapshots[uid], at) for uid, at in carried.items() if uid in snapshots}}
    need = [uid for uid in changed if uid not in stored and origins.get(uid) != "ticket"]
    if need:
        stored = {**stored, **await services.store.snapshots.get_seen(need)}
    out: dict[str, datetime] = {}
    for uid in changed:
        upn, at = stored.get(uid, (None, None))
        if at is not None and origins.get(uid) != "ticket" and upn == snapshots.get(uid):
            out[uid] = at
    return out


async def _forget_users(services: Services, user_ids: list[str], now: datetime) -> None:
    """Deleted users: their open case is dismissed and their snapshot forgotten."""
    for uid in user_ids:
        stored = await services.store.flags.get(uid)
        if stored and stored.flag.status.is_open:
            flag = dismiss(stored.flag, at=now, note="user deleted")
            try:
                await services.store.flags.update(flag, stored.etag, created_at=stored.created_at)
            except ConcurrencyError:
                log.info("flag of %s changed while dismissing; the tracker will see it", uid)
    await services.store.snapshots.delete(user_ids)
