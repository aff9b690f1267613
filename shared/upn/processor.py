"""The idempotent processor: one `users` message of at most 20 users, compared with the UPN snapshot.

    message --> current UPN (from the message, else one $batch of GET users)
            --> snapshot (the message's `oldUpn`, else Table) --> changed users only: one $batch of fido2Methods
            --> decide_change --> merge_flag with the stored flag --> flag writes --> snapshot writes

The flag is written before the snapshot, so a crash between the two re-detects the change on the next
delivery and `merge_flag` turns it into a no-op. The same change delivered twice, or by two sources,
makes one flag. Users Graph no longer has (404) have their open case dismissed and their snapshot
forgotten. Decisions are made in `decide.py`; this module does the I/O.
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
from shared.upn.clock import now as _now
from shared.upn.decide import DecisionKind, decide_change, dismiss, merge_flag, parse_aware_time, same_upn
from shared.upn.flag import Flag

log = logging.getLogger(__name__)


async def _save_flag(services: Services, candidate: Flag) -> Flag | None:
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
    """`_save_flag` for many users at once. First try: create them all as new cases, one transaction
    per bucket and no read (`merge_flag` with nothing stored is the candidate itself); users who already
    have a flag go through `_save_flag` (read, merge, create or ETag-update)."""
    if not candidates:
        return []
    created = set(await services.store.flags.create(candidates))
    written = [c for c in candidates if c.user_id in created]
    again = [c for c in candidates if c.user_id not in created]
    if again:
        written += [f for f in await asyncio.gather(*(_save_flag(services, c) for c in again)) if f is not None]
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
                        ticket_id: str | None = None, old_upn_hint: str | None = None) -> dict[str, Any]:
    """Compare each user's UPN with the snapshot and flag those who changed and hold passkeys."""
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
    passkeys = await read_passkeys(services.graph, changed)

    outcome: dict[str, list[str]] = {k.value: [] for k in DecisionKind}
    flags: list[Flag] = []
    snapshot_writes: dict[str, str] = {}
    for uid, upn in current.items():
        decision = decide_change(uid, str(upn), snapshots.get(uid), passkeys.get(uid, []), source=source,
                                 detected_at=now, ticket_id=ticket_id, old_upn_seen_at=old_seen.get(uid),
                                 old_upn_origin=origins.get(uid, "snapshot"))
        outcome[decision.kind.value].append(uid)
        if decision.flag is not None:
            flags.append(decision.flag)
        if decision.write_snapshot or (decision.kind == DecisionKind.UNCHANGED and uid in seen):
            snapshot_writes[uid] = decision.upn  # unchanged: records that the UPN was confirmed just now

    written = await _save_flags(services, flags)
    if snapshot_writes:
        await services.store.snapshots.put(snapshot_writes, seen)
    if removed:
        await _forget_users(services, removed, now)
    return {"processed": len(current), "removed": len(removed), "flagged": [f.user_id for f in written],
            "decisions": {k: v for k, v in outcome.items() if v}}


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
