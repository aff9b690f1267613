"""The delta sweep: the backstop for lost notifications. It reads `users/delta` from the stored link,
compares every UPN with the snapshot in memory, and queues only the changed users (with their old UPN)
as `users` messages for the processor, checkpointing every page.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from shared.graph.delta import DELTA_START, DeltaExpired, read_delta_page
from shared.services import Services
from shared.upn.clock import iso as _iso
from shared.upn.clock import now as _now
from shared.upn.decide import same_upn
from shared.upn.messages import USERS_PER_MESSAGE, send_messages, users_message

log = logging.getLogger(__name__)

SWEEP_HOLD_PAGES = 4  # a changed user waits at most this many delta pages for a full message of its bucket
DELTA_CHECKPOINT = "delta"


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
            page = await read_delta_page(services.graph, fetch)
        except DeltaExpired as exc:
            log.warning("delta token expired (%s); starting a full resync", exc.status_code)
            resyncs += 1
            state = {"nextLink": DELTA_START, "seeding": bool(state.get("seeding")), "resync": True}
            held, links, fetch = _SweepBuffer(held.buckets), {}, DELTA_START  # the resync reads everyone
            etag = await services.store.put_checkpoint(tenant, DELTA_CHECKPOINT, state, etag)
            continue
        pages += 1
        links[pages] = fetch
        entries: list[dict[str, Any]] = []
        for user in page.users:
            if user.deleted:
                entries.append({"id": user.id, "removed": "deleted"})
            elif user.upn:
                entries.append({"id": user.id, "upn": user.upn, "seenAt": _iso(read_at)})
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
            last = page.next_link is None or (max_pages is not None and pages >= max_pages)
            groups = held.add(entries, pages) + held.take(None if last else pages - SWEEP_HOLD_PAGES + 1)
            messages = [users_message(g, source="sweep") for g in groups]
            await send_messages(services, messages)
            queued += len(messages)
        if page.next_link is not None:
            fetch = page.next_link
            oldest = held.oldest_page()
            for number in [n for n in links if oldest is None or n < oldest]:
                del links[number]
            state["nextLink"] = links[oldest] if oldest is not None else fetch
        else:
            state = {"deltaLink": page.delta_link, "nextLink": None, "seeding": False,
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
