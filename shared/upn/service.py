"""UPN-change use cases: intake, the idempotent processor, the delta sweep, the re-registration
tracker and the subscription manager. Decisions are made in `decide.py`; this module does the I/O.

Every source (Graph notifications, Event Grid, tickets, the delta sweep) ends up as a queue message
of at most 20 users (`users_message`), and one processor handles them all:

    message --> current UPN (from the message, else one $batch of GET users)
            --> snapshot (the message's `oldUpn`, else Table) --> changed users only: one $batch of fido2Methods
            --> decide_change --> merge_flag with the stored flag --> flag writes --> snapshot writes

The flag is written before the snapshot, so a crash between the two re-detects the change on the next
delivery and `merge_flag` turns it into a no-op. The same change delivered twice, or by two sources,
makes one flag. A Graph 429 puts the message back on the queue hidden for `Retry-After`, without
counting toward the poison queue.
"""
from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
import io
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.errors import (
    ConcurrencyError,
    ConflictError,
    GraphError,
    GraphThrottled,
    InputError,
    NotFound,
    RemovalNotWaiting,
)
from shared.graph.passkeys import raise_if_throttled
from shared.services import Services
from shared.upn.decide import (
    APPROVAL_REQUIRED,
    HOLD_AUDIT_MODE,
    HOLD_USER_NOT_FOUND,
    DecisionKind,
    Flag,
    FlagStatus,
    approve_removal,
    decide_change,
    dismiss,
    flag_from_dict,
    flag_to_dict,
    hold_removal,
    mark_removed,
    merge_flag,
    needs_approval,
    parse_aware_time,
    removable_passkeys,
    require_approval,
    same_upn,
    track,
)
from shared.upn.intake import ChangeNotice, LifecycleEvent

log = logging.getLogger(__name__)

USERS_PER_MESSAGE = 20  # one $batch of fido2Methods reads per message
SWEEP_HOLD_PAGES = 4  # a changed user waits at most this many delta pages for a full message of its bucket
DELTA_PAGE_RU = 1  # users/delta with $select (platform-limits.md: 1-2 RU a page)
DELTA_START = "/users/delta?$select=id,userPrincipalName"
DELTA_CHECKPOINT = "delta"
SUBSCRIPTION_CHECKPOINT = "subscription"
SUBSCRIPTION_MAX_MINUTES = 41_760  # users: < 29 days
SUBSCRIPTION_RENEW_WITHIN = timedelta(days=14)
SUBSCRIPTION_CHANGE_TYPE = "updated,deleted"  # deleted: a permanent deletion is heard too
SUBSCRIPTION_LEASE = "subscription"  # held while creating, renewing or replacing the subscription
SUBSCRIPTION_LEASE_SECONDS = 120
MESSAGE_VERSION = 1


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------ messages
def users_message(users: list[dict[str, Any]], *, source: str, ticket_id: str | None = None,
                  old_upn: str | None = None) -> dict[str, Any]:
    """A queue message for at most 20 users: `[{"id", "upn"?, "oldUpn"?, "seenAt"?, "removed"?}]` (`seenAt`:
    when the sweep read `upn` from Graph)."""
    if not 0 < len(users) <= USERS_PER_MESSAGE:
        raise ValueError(f"a message carries 1 to {USERS_PER_MESSAGE} users")
    message: dict[str, Any] = {"v": MESSAGE_VERSION, "kind": "users", "source": source, "users": users,
                               "at": _iso(_now())}
    if ticket_id:
        message["ticketId"] = ticket_id
    if old_upn:
        message["oldUpn"] = old_upn
    return message


def chunk_users(users: list[dict[str, Any]], *, source: str) -> list[dict[str, Any]]:
    return [users_message(users[i:i + USERS_PER_MESSAGE], source=source)
            for i in range(0, len(users), USERS_PER_MESSAGE)]


async def send_messages(services: Services, messages: list[dict[str, Any]], *, delay: int = 0) -> None:
    """Queue messages stamped with the tenant they belong to (one queue may serve many tenants)."""
    from shared.telemetry import current_run_id

    if messages:
        run = current_run_id()
        await services.store.queue.send(
            [{**m, "tenant": services.settings.tenant_id, **({"runId": run} if run else {})} for m in messages],
            visibility_timeout=delay)


async def enqueue_notices(services: Services, notices: Iterable[ChangeNotice]) -> int:
    """Queue the users named by change notifications (ids only: the processor reads their UPN)."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for notice in notices:
        if notice.user_id in seen:
            continue
        seen.add(notice.user_id)
        # A `deleted` notice is queued like any other: the processor reads the user, and only Graph's 404
        # confirms the deletion before the snapshot is forgotten (a notice alone never forgets anyone).
        entry: dict[str, Any] = {"id": notice.user_id}
        by_source.setdefault(notice.source, []).append(entry)
    await send_messages(services, [m for source, users in by_source.items()
                                   for m in chunk_users(users, source=source)])
    return len(seen)


async def enqueue_lifecycle(services: Services, events: Iterable[LifecycleEvent]) -> int:
    """Queue lifecycle work (reauthorize, recreate, sweep): the webhook itself never calls Graph."""
    messages = [{"v": MESSAGE_VERSION, "kind": "lifecycle", "event": e.event, "subscriptionId": e.subscription_id}
                for e in events]
    await send_messages(services, messages)
    return len(messages)


async def handle_message(services: Services, body: bytes | str, *, dequeue_count: int = 1) -> dict[str, Any]:
    """The queue trigger's work: dispatch one message by kind; a throttled message is re-queued."""
    import json

    try:
        message = json.loads(body)
    except ValueError:
        raise InputError("queue message is not JSON") from None
    if not isinstance(message, dict) or message.get("kind") not in ("users", "lifecycle", "sweep"):
        raise InputError("queue message has no known kind")
    from shared.telemetry import bind_run

    bind_run(message.get("runId") if isinstance(message.get("runId"), str) else None)
    if message.get("tenant") != services.settings.tenant_id:
        log.warning("dropping a queue message for another tenant")
        return {"dropped": "other tenant"}
    try:
        if message["kind"] == "users":
            users = message.get("users")
            if not isinstance(users, list) or not all(isinstance(u, dict) and u.get("id") for u in users):
                raise InputError("queue message users: expected a list of {id}")
            result = await process_users(services, users, source=str(message.get("source", "sweep")),
                                         ticket_id=message.get("ticketId"), old_upn_hint=message.get("oldUpn"))
            return result
        if message["kind"] == "lifecycle":
            return await handle_lifecycle(services, str(message.get("event")), message.get("subscriptionId"))
        return await sweep(services, trigger="queue")
    except GraphThrottled as exc:
        delay = max(1, int(exc.retry_after or 30))
        await send_messages(services, [message], delay=delay)
        log.warning("Graph throttled a %s message; re-queued for %d s (delivery %d)", message["kind"], delay,
                    dequeue_count)
        return {"requeued": True, "retryAfter": delay}


# ------------------------------------------------------------------------------------------ processor
def _flag_doc(flag: Flag) -> dict[str, Any]:
    return flag_to_dict(flag)


async def _current_upns(services: Services, ids: list[str]) -> dict[str, str | None]:
    """Current UPN per user id from Graph (None: the user no longer exists), 20 per $batch."""
    answers = await services.graph.batch_get({uid: f"/users/{uid}?$select=id,userPrincipalName" for uid in ids})
    raise_if_throttled(answers)
    out: dict[str, str | None] = {}
    for uid, answer in answers.items():
        if answer.status == 200 and isinstance(answer.body, dict):
            out[uid] = answer.body.get("userPrincipalName")
        elif answer.status == 404:
            out[uid] = None
        else:
            raise GraphError(f"reading user {uid} failed with {answer.status}", status_code=answer.status)
    return out


async def read_passkeys(services: Services, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each user's registered passkeys (raw fido2Methods JSON), 20 per $batch at the tenant's pace."""
    from shared.graph.passkeys import read_passkeys as read

    return await read(services.graph, ids)


async def _save_flag(services: Services, candidate: Flag) -> Flag | None:
    """Merge `candidate` into the stored flag and write it with ETag concurrency; None: nothing new."""
    tenant = services.settings.tenant_id
    for _ in range(5):
        stored = await services.store.get_flag(tenant, candidate.user_id)
        existing = flag_from_dict(stored) if stored else None
        merged = merge_flag(existing, candidate)
        if merged is None:
            return None
        try:
            if stored is None:
                created = await services.store.create_flags(tenant, [_flag_doc(merged)])
                if created:
                    return merged
                continue  # somebody created it first: merge with theirs
            await services.store.update_flag(tenant, _flag_doc(merged), stored["etag"])
            return merged
        except ConcurrencyError:
            continue
    raise ConcurrencyError(f"flag of user {candidate.user_id} kept changing under us")


async def _save_flags(services: Services, candidates: list[Flag]) -> list[Flag]:
    """`_save_flag` for many users at once. First try: create them all as new cases, one transaction
    per bucket and no read (`merge_flag` with nothing stored is the candidate itself); users whose
    transaction met an existing row go through `_save_flag` (read, merge, create or ETag-update)."""
    if not candidates:
        return []
    tenant = services.settings.tenant_id
    created = set(await services.store.create_flags(tenant, [_flag_doc(c) for c in candidates], only_new=True))
    written = [c for c in candidates if c.user_id in created]
    again = [c for c in candidates if c.user_id not in created]
    if again:
        written += [f for f in await asyncio.gather(*(_save_flag(services, c) for c in again)) if f is not None]
    return written


async def process_users(services: Services, users: list[dict[str, Any]], *, source: str,
                        ticket_id: str | None = None, old_upn_hint: str | None = None) -> dict[str, Any]:
    """Compare each user's UPN with the snapshot and flag those who changed and hold passkeys."""
    tenant = services.settings.tenant_id
    now = _now()  # taken before any read: a UPN read below was current at this moment or later
    current: dict[str, str | None] = {}
    seen: dict[str, datetime] = {}  # when each current UPN was read from Graph (sweep: its page; else now)
    removed: list[str] = []
    known: dict[str, str] = {}  # old UPNs the message carries (the sweep compared with the snapshot)
    known_seen: dict[str, datetime] = {}  # and when the snapshot had last seen them
    for entry in users:
        uid = str(entry["id"]).lower()
        if entry.get("removed"):
            removed.append(uid)
        else:
            current[uid] = entry.get("upn")
            if isinstance(entry.get("oldUpn"), str) and entry["oldUpn"]:
                known[uid] = entry["oldUpn"]
                if (was := parse_aware_time(entry.get("oldUpnSeenAt"))) is not None:
                    known_seen[uid] = was
            if entry.get("upn") and (at := parse_aware_time(entry.get("seenAt"))) is not None:
                seen[uid] = at
    unknown = [uid for uid, upn in current.items() if not upn]
    if unknown:
        for uid, upn in (await _current_upns(services, unknown)).items():
            if upn is None:
                removed.append(uid)
                current.pop(uid, None)
            else:
                current[uid] = upn
                seen[uid] = now

    unread = [uid for uid in current if uid not in known]
    stored = await services.store.get_snapshots_seen(tenant, unread) if unread else {}
    snapshots = {uid: upn for uid, (upn, _) in stored.items()}
    snapshots.update((uid, known[uid]) for uid in current if uid in known)
    origins: dict[str, str] = {}
    if old_upn_hint and len(current) == 1:
        (uid,) = current
        if uid not in snapshots:
            snapshots[uid] = old_upn_hint  # a ticket may tell us the old UPN we never saw
            origins[uid] = "ticket"
    changed = [uid for uid, upn in current.items() if snapshots.get(uid) and not same_upn(snapshots[uid], upn)]
    old_seen = await _old_upn_seen(services, changed, snapshots, stored, origins, known_seen)
    passkeys = await read_passkeys(services, changed)

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
        await services.store.put_snapshots(tenant, snapshot_writes, seen)
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
        stored = {**stored, **await services.store.get_snapshots_seen(services.settings.tenant_id, need)}
    out: dict[str, datetime] = {}
    for uid in changed:
        upn, at = stored.get(uid, (None, None))
        if at is not None and origins.get(uid) != "ticket" and upn == snapshots.get(uid):
            out[uid] = at
    return out


async def _forget_users(services: Services, user_ids: list[str], now: datetime) -> None:
    """Deleted users: their open case is dismissed and their snapshot forgotten."""
    tenant = services.settings.tenant_id
    for uid in user_ids:
        stored = await services.store.get_flag(tenant, uid)
        if stored and FlagStatus(stored["status"]).is_open:
            flag = dismiss(flag_from_dict(stored), at=now, note="user deleted")
            try:
                await services.store.update_flag(tenant, _flag_doc(flag), stored["etag"])
            except ConcurrencyError:
                log.info("flag of %s changed while dismissing; the tracker will see it", uid)
    await services.store.delete_snapshots(tenant, user_ids)


# ------------------------------------------------------------------------------------------ sweep
class _SweepBuffer:
    """The sweep's changed users grouped by storage bucket (the flag and snapshot partition), so a
    message of 20 users costs the processor one write transaction per table instead of up to 20.

    A bucket is queued as soon as it holds 20 users; a bucket that waited `SWEEP_HOLD_PAGES` pages, and
    everything at the end of a run, is queued as packed messages of 20 (sorted by bucket).
    """

    def __init__(self, buckets: int) -> None:
        self.buckets = buckets
        self.held: dict[int, list[dict[str, Any]]] = {}
        self.since: dict[int, int] = {}  # bucket -> page number of its oldest held user

    def add(self, entries: list[dict[str, Any]], page: int) -> list[list[dict[str, Any]]]:
        """Hold `entries`; return the buckets that filled up (20 users each)."""
        from shared.state import bucket_of

        full: list[list[dict[str, Any]]] = []
        for entry in entries:
            bucket = bucket_of(str(entry["id"]).lower(), self.buckets)
            users = self.held.setdefault(bucket, [])
            if not users:
                self.since[bucket] = page
            users.append(entry)
            if len(users) >= USERS_PER_MESSAGE:
                full.append(users)
                del self.held[bucket], self.since[bucket]
        return full

    def take(self, older_than: int | None = None) -> list[list[dict[str, Any]]]:
        """Release the buckets held since before page `older_than` (all when None), packed 20 a message."""
        buckets = sorted(b for b, p in self.since.items() if older_than is None or p < older_than)
        users = [u for b in buckets for u in self.held.pop(b)]
        for b in buckets:
            del self.since[b]
        return [users[i:i + USERS_PER_MESSAGE] for i in range(0, len(users), USERS_PER_MESSAGE)]

    def oldest_page(self) -> int | None:
        return min(self.since.values()) if self.since else None


def _compare(entries: list[dict[str, Any]], known: dict[str, str]
             ) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Split a delta page against the in-memory snapshots: (entries to queue, snapshots to write now).

    Changed users are queued with `oldUpn` and, when the snapshot kept it, `oldUpnSeenAt` (so the processor
    need not read the snapshot again); deleted users are queued as they are; unchanged users are dropped;
    new users (no snapshot) and case-only changes are written here, as the processor would (no flag either
    way). `known` holds stored snapshot values (`load_all_snapshots(raw=True)`) and is updated, so a user
    seen twice in one run is compared with its latest UPN."""
    from shared.state.store import snapshot_upn, split_snapshot

    out: list[dict[str, Any]] = []
    fresh: dict[str, str] = {}
    for entry in entries:
        upn = entry.get("upn")
        if not upn:
            out.append(entry)
            continue
        uid = str(entry["id"]).lower()
        stored = known.get(uid)
        old = None if stored is None else snapshot_upn(stored)
        if old is None or same_upn(old, upn):
            if old != upn:
                fresh[uid] = upn
        else:
            _, seen = split_snapshot(stored or "")
            out.append({**entry, "oldUpn": old, **({"oldUpnSeenAt": _iso(seen)} if seen else {})})
        known[uid] = upn
    return out, fresh


async def sweep(services: Services, *, trigger: str = "timer", max_pages: int | None = None) -> dict[str, Any]:
    """The backstop: read users/delta from the stored link, queue the changes, checkpoint every page.

    The first run seeds the UPN snapshot directly and flags no one. Later runs load every snapshot
    first and compare in memory: only changed users are queued (with their old UPN), new users'
    snapshots are written directly, unchanged users cost nothing. Changed users are queued grouped
    by storage bucket (`_SweepBuffer`), so some wait a few pages for their message; the stored link
    (with ETag) is always that of the oldest page with a user not yet queued, so a crash resumes
    there and may re-queue a few pages, which the idempotent processor absorbs. Each page's RU is
    charged to the tenant's budget, so the processors' lookups keep to Graph's pace around it. A 410
    or syncStateNotFound starts a full resync: every user is compared with the snapshot, so only
    real changes are flagged.
    """
    from shared.telemetry import bind_run, current_run_id

    bind_run(current_run_id())
    tenant = services.settings.tenant_id
    started = time.monotonic()
    value, etag = await services.store.get_checkpoint(tenant, DELTA_CHECKPOINT)
    state = dict(value or {})
    if not state.get("nextLink"):
        state["seeding"] = not state.get("deltaLink")
        state["nextLink"] = state.get("deltaLink") or DELTA_START
    pages = users_seen = queued = resyncs = 0
    from shared.state import ABSENT

    etag = etag or ABSENT
    # Not seeding: every snapshot in memory (one query per partition), so unchanged users cost nothing,
    # new users are recorded here, and only changed users are queued, each with its old UPN.
    known = None if state.get("seeding") else await services.store.load_all_snapshots(tenant, raw=True)
    held = _SweepBuffer(services.store.snapshot_buckets)
    fetch: str = state["nextLink"]
    links: dict[int, str] = {}  # page number -> the link it was read from (the resume point while held)
    while True:
        read_at = _now()  # the page's UPNs were current at this moment or later
        try:
            page = await services.graph.get_json(fetch, headers={"x-ms-throttle-priority": "Low"},
                                                 what="read users/delta", ru=DELTA_PAGE_RU)
        except GraphError as exc:
            if exc.status_code == 410 or exc.graph_code in ("syncStateNotFound", "resyncRequired"):
                log.warning("delta token expired (%s); starting a full resync", exc.status_code)
                resyncs += 1
                state = {"nextLink": DELTA_START, "seeding": bool(state.get("seeding")), "resync": True}
                held, links, fetch = _SweepBuffer(held.buckets), {}, DELTA_START  # the resync reads everyone
                etag = await services.store.put_checkpoint(tenant, DELTA_CHECKPOINT, state, etag)
                continue
            raise
        pages += 1
        links[pages] = fetch
        entries = []
        for user in page.get("value", []):
            if "@removed" in user:
                if user["@removed"].get("reason") == "deleted":
                    entries.append({"id": user["id"], "removed": "deleted"})
                continue  # soft-deleted ("changed"): restorable, so its case stays as it is
            if user.get("userPrincipalName"):
                entries.append({"id": user["id"], "upn": user["userPrincipalName"], "seenAt": _iso(read_at)})
        users_seen += len(entries)
        if state.get("seeding"):
            upns = {e["id"].lower(): e["upn"] for e in entries if "upn" in e}
            await services.store.put_snapshots(tenant, upns, dict.fromkeys(upns, read_at))
        else:
            if known is None:  # a resync that started while seeding, then finished seeding: compare from here
                known = await services.store.load_all_snapshots(tenant, raw=True)
            entries, fresh = _compare(entries, known)
            if fresh:
                await services.store.put_snapshots(tenant, fresh, dict.fromkeys(fresh, read_at))
            last = "@odata.nextLink" not in page or (max_pages is not None and pages >= max_pages)
            groups = held.add(entries, pages) + held.take(None if last else pages - SWEEP_HOLD_PAGES + 1)
            messages = [users_message(g, source="sweep") for g in groups]
            await send_messages(services, messages)
            queued += len(messages)
        if "@odata.nextLink" in page:
            fetch = page["@odata.nextLink"]
            oldest = held.oldest_page()
            for number in [n for n in links if oldest is None or n < oldest]:
                del links[number]
            state["nextLink"] = links[oldest] if oldest is not None else fetch
        else:
            state = {"deltaLink": page.get("@odata.deltaLink"), "nextLink": None, "seeding": False,
                     "completedAt": _iso(_now())}
        etag = await services.store.put_checkpoint(tenant, DELTA_CHECKPOINT, state, etag)
        if not state.get("nextLink"):
            break
        if max_pages is not None and pages >= max_pages:
            break
    return {"trigger": trigger, "pages": pages, "users": users_seen, "messagesQueued": queued,
            "resyncs": resyncs, "complete": not state.get("nextLink"), "seeded": bool(value is None or
                                                                                      (value or {}).get("seeding")),
            "seconds": round(time.monotonic() - started, 3)}


# ------------------------------------------------------------------------------------------ tracker
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
        current = await read_passkeys(services, [d["userId"] for d in chunk])
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
                    await services.store.update_flag(tenant, _flag_doc(result.flag), doc["etag"])
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
    upns = await _current_upns(services, list(planned))
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
        await _delete_passkeys(services, uid, ids)
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
        await services.store.update_flag(tenant, _flag_doc(updated), doc["etag"])
        approved.append(flag.user_id)
    return {"approved": approved, "alreadyApproved": already}


async def _delete_passkeys(services: Services, user_id: str, method_ids: list[str]) -> None:
    from shared.graph.permissions import require_write_roles

    await require_write_roles(services.graph, [{"op": "delete_passkey"}])  # the role first: no partial deletion
    client = services.graph.client
    for mid in method_ids:
        builder = client.users.by_user_id(user_id).authentication.fido2_methods.by_fido2_authentication_method_id(mid)
        try:
            await services.graph.call("DELETE", builder.delete, what="delete a pre-change passkey")
        except NotFound:
            pass  # already gone: that is what we wanted


# ------------------------------------------------------------------------------------------ subscription
async def ensure_subscription(services: Services, *, now: datetime | None = None) -> dict[str, Any]:
    """Create the /users subscription, renew it well before it expires, recreate it when Graph lost it or
    when NOTIFICATION_CLIENT_STATE changed since it was created.

    An unusable clientState (unset, short, a placeholder, an unresolved Key Vault reference) is refused with
    SecretUnavailable before any Graph call: registering it would let anyone forge our notifications. A fresh
    subscription costs one Table read; any Graph write happens under a lease, so instances starting together
    create one subscription (the others get ConflictError and leave it to the holder).
    """
    tenant = services.settings.tenant_id
    now = now or _now()
    fingerprint = client_state_fingerprint(tenant, services.settings.secret("notification_client_state"))
    await services.graph.confirm_tenant()  # the right tenant before any storage read or write (wrongTenant)
    value, _ = await services.store.get_checkpoint(tenant, SUBSCRIPTION_CHECKPOINT)
    if _is_fresh(value, fingerprint, now):
        return {"action": "none", **(value or {})}
    owner = uuid.uuid4().hex
    if not await services.store.acquire_lease(tenant, SUBSCRIPTION_LEASE, owner, SUBSCRIPTION_LEASE_SECONDS):
        raise ConflictError("another instance is creating or renewing the subscription right now")
    try:
        return await _ensure_subscription_leased(services, fingerprint, now)
    finally:
        await services.store.release_lease(tenant, SUBSCRIPTION_LEASE, owner)


def client_state_fingerprint(tenant_id: str, client_state: str) -> str:
    """A keyed hash of the clientState, stored with the subscription so a rotation is noticed without the
    value ever being stored."""
    key = f"passkey-guard/clientState/{tenant_id}".encode()
    return hmac.new(key, client_state.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _replacement_reason(value: Mapping[str, Any] | None, fingerprint: str) -> str | None:
    """Why the stored subscription must be replaced rather than renewed, or None."""
    if not value or not value.get("id"):
        return None
    if value.get("removed"):
        return "was removed by Graph"
    if value.get("clientStateFingerprint") != fingerprint:
        return "was made with another clientState"
    if value.get("changeType") != SUBSCRIPTION_CHANGE_TYPE:
        return f"does not ask for {SUBSCRIPTION_CHANGE_TYPE}"
    return None


def _is_fresh(value: Mapping[str, Any] | None, fingerprint: str, now: datetime) -> bool:
    """The stored subscription is the one we would make (clientState, change types) and far from expiry."""
    if not value or not value.get("id") or _replacement_reason(value, fingerprint):
        return False
    return datetime.fromisoformat(value["expirationDateTime"]) - now > SUBSCRIPTION_RENEW_WITHIN


async def _ensure_subscription_leased(services: Services, fingerprint: str, now: datetime) -> dict[str, Any]:
    """ensure_subscription's Graph work, under the subscription lease (the checkpoint is read again)."""
    tenant = services.settings.tenant_id
    value, etag = await services.store.get_checkpoint(tenant, SUBSCRIPTION_CHECKPOINT)
    if _is_fresh(value, fingerprint, now):
        return {"action": "none", **(value or {})}  # another instance did it just before us
    action = "created"
    reason = _replacement_reason(value, fingerprint)
    if value and value.get("id") and reason:
        log.warning("subscription %s %s; replacing it", value["id"], reason)
        await _delete_subscription(services, value["id"])  # the checkpoint keeps its id until the new one exists
        action = "recreated"
    elif value and value.get("id"):
        try:
            renewed = await _renew(services, value["id"], now)
            state = {**value, "expirationDateTime": renewed}
            await services.store.put_checkpoint(tenant, SUBSCRIPTION_CHECKPOINT, state, etag)
            return {"action": "renewed", **state}
        except NotFound:
            log.warning("subscription %s is gone; recreating it", value["id"])
    state = {**await _create_subscription(services, now), "clientStateFingerprint": fingerprint}
    await services.store.put_checkpoint(tenant, SUBSCRIPTION_CHECKPOINT, state)
    return {"action": action, **state}


async def _delete_subscription(services: Services, subscription_id: str) -> None:
    """Delete a subscription before replacing it (Graph refuses a second one for the same resource and URL)."""
    builder = services.graph.client.subscriptions.by_subscription_id(subscription_id)
    try:
        await services.graph.call("DELETE", builder.delete, what="delete the subscription of a rotated clientState")
    except NotFound:
        pass  # already gone: that is what we wanted


def _expiry(now: datetime) -> datetime:
    return now + timedelta(minutes=SUBSCRIPTION_MAX_MINUTES - 5)


async def _create_subscription(services: Services, now: datetime) -> dict[str, Any]:
    from msgraph.generated.models.subscription import Subscription

    settings = services.settings
    body = Subscription(
        change_type=SUBSCRIPTION_CHANGE_TYPE, resource="users",
        notification_url=settings.require("notification_url", "NOTIFICATION_URL"),
        lifecycle_notification_url=settings.lifecycle_notification_url,
        client_state=settings.secret("notification_client_state"),
        expiration_date_time=_expiry(now),
    )
    created = await services.graph.call("POST", lambda: services.graph.client.subscriptions.post(body),
                                        what="create the /users subscription")
    if created is None or not created.id:
        raise GraphError("Graph created the subscription but returned no id")
    expiry = created.expiration_date_time or _expiry(now)
    return {"id": created.id, "expirationDateTime": expiry.isoformat(), "createdAt": _iso(now),
            "changeType": SUBSCRIPTION_CHANGE_TYPE}


async def _renew(services: Services, subscription_id: str, now: datetime) -> str:
    from msgraph.generated.models.subscription import Subscription

    expiry = _expiry(now)
    builder = services.graph.client.subscriptions.by_subscription_id(subscription_id)
    await services.graph.call("PATCH", lambda: builder.patch(Subscription(expiration_date_time=expiry)),
                              what="renew the /users subscription")
    return expiry.isoformat()


async def _mark_removed(services: Services) -> None:
    """Note that Graph removed the stored subscription, keeping its id until a new one replaces it: if the
    re-creation fails, the redelivered lifecycle message still names the stored id and is retried."""
    tenant = services.settings.tenant_id
    value, etag = await services.store.get_checkpoint(tenant, SUBSCRIPTION_CHECKPOINT)
    if value:
        await services.store.put_checkpoint(tenant, SUBSCRIPTION_CHECKPOINT, {**value, "removed": True}, etag)


async def handle_lifecycle(services: Services, event: str, subscription_id: str | None) -> dict[str, Any]:
    """reauthorizationRequired: reauthorize and renew; subscriptionRemoved: recreate; missed: sweep.

    Only for the subscription we stored: an event naming any other id (an old subscription, another app's,
    or a forgery that knew the clientState) changes nothing and is logged."""
    tenant = services.settings.tenant_id
    stored = (await services.store.get_checkpoint(tenant, SUBSCRIPTION_CHECKPOINT))[0] or {}
    if not subscription_id or str(subscription_id).lower() != str(stored.get("id") or "").lower():
        log.warning("lifecycle event %s names subscription %s, not the stored one (%s): nothing done", event,
                    subscription_id, stored.get("id"))
        return {"event": event, "action": "ignored", "reason": "not the stored subscription"}
    if event == "reauthorizationRequired" and subscription_id:
        builder = services.graph.client.subscriptions.by_subscription_id(subscription_id)
        try:
            await services.graph.call("POST", builder.reauthorize.post, what="reauthorize the subscription")
            expiry = await _renew(services, subscription_id, _now())
        except NotFound:
            await _mark_removed(services)
            return {"event": event, **(await ensure_subscription(services))}
        value, etag = await services.store.get_checkpoint(tenant, SUBSCRIPTION_CHECKPOINT)
        if value and value.get("id") == subscription_id:
            await services.store.put_checkpoint(tenant, SUBSCRIPTION_CHECKPOINT,
                                                {**value, "expirationDateTime": expiry}, etag)
        return {"event": event, "action": "reauthorized", "expirationDateTime": expiry}
    if event == "subscriptionRemoved":
        await _mark_removed(services)
        return {"event": event, **(await ensure_subscription(services))}
    if event == "missed":
        return {"event": event, **(await sweep(services, trigger="lifecycle"))}
    log.info("lifecycle event %s needs no action", event)
    return {"event": event, "action": "none"}


# ------------------------------------------------------------------------------------------ read surfaces
FLAG_STATUSES = tuple(s.value for s in FlagStatus)
CSV_COLUMNS = ("userId", "oldUpn", "newUpn", "status", "detectedAt", "statusChangedAt", "source", "ticketId",
               "passkeyCount", "passkeys")


def _public_flag(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A stored flag as the API shows it: camelCase, ISO 8601 times, no storage bookkeeping."""
    out = {k: v for k, v in doc.items() if k not in ("etag", "created_at", "updated_at")}
    for stored, shown in (("created_at", "createdAt"), ("updated_at", "updatedAt")):
        value = doc.get(stored)
        if isinstance(value, datetime):
            out[shown] = _iso(value)
    return out


async def list_flags(services: Services, *, status: str | None, limit: int = 100,
                     page_token: str | None = None) -> dict[str, Any]:
    if status is not None and status not in FLAG_STATUSES:
        raise InputError(f"status must be one of {', '.join(FLAG_STATUSES)}")
    flags, token = await services.store.list_flags(services.settings.tenant_id, status=status, limit=limit,
                                                   page_token=page_token)
    return {"value": [_public_flag(f) for f in flags], "nextPageToken": token}


#: A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """One export cell as text, defused: user-chosen text (passkey names, UPNs, ticket ids) that starts
    with a formula trigger gets a leading single quote, so a spreadsheet shows it instead of running it."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


async def flags_csv(services: Services, *, status: str | None) -> str:
    """Every flag (optionally of one status) as CSV for the helpdesk, AAGUIDs named where known."""
    from shared.policy.aaguids import name_of

    if status is not None and status not in FLAG_STATUSES:
        raise InputError(f"status must be one of {', '.join(FLAG_STATUSES)}")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    async for doc in services.store.iter_flags(services.settings.tenant_id, status):
        keys = "; ".join(f"{p.get('displayName') or p.get('model') or 'passkey'} "
                         f"({name_of(p.get('aaGuid') or '') if p.get('aaGuid') else 'unknown'})"
                         for p in doc.get("passkeys", []))
        writer.writerow([csv_cell(cell) for cell in (
            doc.get("userId"), doc.get("oldUpn"), doc.get("newUpn"), doc.get("status"), doc.get("detectedAt"),
            doc.get("statusChangedAt"), doc.get("source"), doc.get("ticketId") or "", len(doc.get("passkeys", [])),
            keys)])
    return out.getvalue()


def new_run_id() -> str:
    return uuid.uuid4().hex


async def ticket_action(services: Services, event: Any) -> dict[str, Any]:
    """Carry out one verified ticket event inline (one user, so within the webhook's time)."""
    from urllib.parse import quote

    if event.action == "verify_policy":
        from shared.policy.verify import verify

        return {"report": await verify(services, trigger="ticket")}
    user_id = event.user_id
    if user_id is None:
        try:
            # OData key literal: ' doubled; then percent-encoded, as a UPN may hold # (Entra allows ' # ^ ~ !).
            key = quote(event.user_principal_name.replace("'", "''"), safe="@'!^~")
            user = await services.graph.get_json(f"/users('{key}')?$select=id,userPrincipalName",
                                                 what="find the ticket's user")
        except NotFound:
            raise InputError(f"userPrincipalName: no user {event.user_principal_name} in the tenant") from None
        user_id = user["id"]
    source = "ticket" if event.action == "upn_changed" else "recheck"
    result = await process_users(services, [{"id": user_id}], source=source, ticket_id=event.ticket_id,
                                 old_upn_hint=event.old_upn)
    if result["removed"]:
        raise InputError(f"userId: user {user_id} does not exist in the tenant")
    if event.action == "recheck_user":
        await track_flags_of(services, [user_id])
    stored = await services.store.get_flag(services.settings.tenant_id, user_id.lower())
    return {"userId": user_id.lower(), "decision": next(iter(result["decisions"]), "none"),
            "flag": _public_flag(stored) if stored else None}


async def track_flags_of(services: Services, user_ids: list[str]) -> None:
    """Re-evaluate the open flags of some users now (the tracker's rule, for a recheck ticket)."""
    tenant = services.settings.tenant_id
    current = await read_passkeys(services, user_ids)
    for uid in user_ids:
        doc = await services.store.get_flag(tenant, uid.lower())
        if not doc or not FlagStatus(doc["status"]).is_open:
            continue
        result = track(flag_from_dict(doc), current.get(uid, []), _now())
        if result.changed:
            await services.store.update_flag(tenant, _flag_doc(result.flag), doc["etag"])


async def intake_event_grid(services: Services, *, event_id: str, subject: str | None, event_type: str,
                            data: Mapping[str, Any] | None, source: str | None = None,
                            cloud_event: bool = False) -> str:
    """One Event Grid event: a user change is queued, a reauthorization becomes lifecycle work.
    The values are those of `intake.event_grid_trigger_values` (a CloudEvent's source names the tenant)."""
    from shared.upn.intake import parse_event_grid_trigger

    settings = services.settings  # a configured clientState must be usable (else Event Grid retries later)
    parsed = parse_event_grid_trigger(event_id=event_id, subject=subject, event_type=event_type, data=data,
                                      tenant_id=services.settings.tenant_id,
                                      client_state=settings.secret("notification_client_state")
                                      if settings.notification_client_state else None,
                                      source=source, cloud_event=cloud_event)
    if parsed is None:
        return "ignored"
    if isinstance(parsed, LifecycleEvent):
        await enqueue_lifecycle(services, [parsed])
        return "lifecycle"
    await enqueue_notices(services, [parsed])
    return "queued"
