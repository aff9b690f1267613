"""The delta sweep: the backstop for lost notifications. It reads `users/delta` from the stored link,
compares every UPN with the snapshot in memory, and queues only the changed users (with their old UPN)
as `users` messages for the processor, checkpointing every page.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from typing import Any

from shared.actors import THE_APP, Actor
from shared.errors import PasskeyGuardError
from shared.graph.delta import DELTA_START, DeltaExpired, DeltaPage, read_delta_page
from shared.progress import Progress
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
    from shared.state.snapshots import snapshot_upn, split_snapshot

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


class _SweepRun:
    """One sweep's progress: the `delta` checkpoint being advanced (with its ETag), the snapshots in memory,
    the users held for a fuller message, and the counts the sweep returns."""

    def __init__(self, services: Services, value: dict[str, Any] | None, etag: Any) -> None:
        from shared.state import ABSENT

        self.services = services
        self.seeded = bool(value is None or value.get("seeding"))
        self.state = dict(value or {})
        if not self.state.get("nextLink"):
            self.state["seeding"] = not self.state.get("deltaLink")
            self.state["nextLink"] = self.state.get("deltaLink") or DELTA_START
        self.etag = etag or ABSENT
        self.known: dict[str, str] | None = None  # every stored snapshot value, when comparing in memory
        self.held = _SweepBuffer(services.store.snapshot_buckets)
        self.fetch: str = self.state["nextLink"]
        self.links: dict[int, str] = {}  # page number -> the link it was read from (the resume point while held)
        self.pages = self.users = self.queued = self.resyncs = 0
        self.changed = 0  # changed (or deleted) users queued
        self.phase_users = 0  # users read before the current phase of the progress began

    async def _save(self) -> None:
        self.etag = await self.services.store.checkpoints.put(DELTA_CHECKPOINT, self.state, self.etag)

    async def restart(self, exc: DeltaExpired) -> None:
        """The delta token expired: start a full resync (every user is read and compared again)."""
        log.warning("delta token expired (%s); starting a full resync", exc.status_code)
        self.resyncs += 1
        self.state = {"nextLink": DELTA_START, "seeding": bool(self.state.get("seeding")), "resync": True}
        self.held, self.links, self.fetch = _SweepBuffer(self.held.buckets), {}, DELTA_START
        await self._save()

    async def take(self, page: DeltaPage, read_at: datetime, *, last: bool) -> None:
        """One page read at `read_at`: seed the snapshots, or compare and queue the changed users."""
        self.pages += 1
        self.links[self.pages] = self.fetch
        entries: list[dict[str, Any]] = []
        for user in page.users:
            if user.deleted:
                entries.append({"id": user.id, "removed": "deleted"})
            elif user.upn:
                entries.append({"id": user.id, "upn": user.upn, "seenAt": _iso(read_at)})
        self.users += len(entries)
        store = self.services.store
        if self.state.get("seeding"):
            upns = {e["id"].lower(): e["upn"] for e in entries if "upn" in e}
            await store.snapshots.put(upns, dict.fromkeys(upns, read_at))
            return
        if self.known is None:  # first compared page (or a resync that started while seeding finished seeding)
            self.known = await store.snapshots.load_all(raw=True)
        entries, fresh = _compare(entries, self.known)
        if fresh:
            await store.snapshots.put(fresh, dict.fromkeys(fresh, read_at))
        groups = self.held.add(entries, self.pages) + self.held.take(
            None if last else self.pages - SWEEP_HOLD_PAGES + 1)
        await send_messages(self.services, [users_message(g, source="sweep") for g in groups])
        self.queued += len(groups)
        self.changed += sum(len(g) for g in groups)

    async def advance(self, page: DeltaPage) -> None:
        """Checkpoint after a page: the link of the oldest page with a user still held, else the next page's;
        after the last page, the delta link for the next run."""
        if page.next_link is not None:
            self.fetch = page.next_link
            oldest = self.held.oldest_page()
            for number in [n for n in self.links if oldest is None or n < oldest]:
                del self.links[number]
            self.state["nextLink"] = self.links[oldest] if oldest is not None else self.fetch
        else:
            self.state = {"deltaLink": page.delta_link, "nextLink": None, "seeding": False,
                          "completedAt": _iso(_now())}
        await self._save()


async def _read_page(services: Services, link: str) -> tuple[datetime, DeltaPage]:
    """One delta page and the moment its request started (its UPNs were current then or later)."""
    read_at = _now()
    return read_at, await read_delta_page(services.graph, link)


async def _begin_phase(services: Services, run: _SweepRun, progress: Progress) -> None:
    """Name what the run reads now and, when it reads every user from the start, how many there are: the
    stored snapshots for a full re-read, Graph's user count for the seeding run. A resumed read or a read
    of changes has no honest total (and so no ETA)."""
    total: int | None = None
    from_start = run.fetch == DELTA_START
    if run.state.get("seeding"):
        phase = "seeding"
        if from_start:
            from shared.graph.users import count_users

            try:
                total = await count_users(services.graph)
            except PasskeyGuardError as exc:  # only the progress needs it: the sweep goes on without a total
                log.warning("the count of users was not read (%s); the seeding shows no total", exc.code)
    elif from_start or run.state.get("resync"):
        phase = "resync"
        total = len(run.known) if from_start and run.known is not None else None
    else:
        phase = "reading changes"
    run.phase_users = run.users
    await progress.begin(phase, unit="users", total=total)


async def _read_all(services: Services, run: _SweepRun, progress: Progress, max_pages: int | None) -> None:
    """Read the delta pages from the stored link to the end (or `max_pages`), pipelined, each page handled,
    checkpointed and shown in the run's progress."""
    await _begin_phase(services, run, progress)
    ahead: asyncio.Task[tuple[datetime, DeltaPage]] | None = None  # the next page, read while this one is handled
    try:
        while True:
            try:
                read_at, page = await (ahead or _read_page(services, run.fetch))
            except DeltaExpired as exc:
                ahead = None
                await run.restart(exc)
                await _begin_phase(services, run, progress)
                continue
            at_limit = max_pages is not None and run.pages + 1 >= max_pages
            ahead = None
            if page.next_link is not None and not at_limit:
                ahead = asyncio.create_task(_read_page(services, page.next_link))
            await run.take(page, read_at, last=page.next_link is None or at_limit)
            await run.advance(page)
            await progress.advance(run.users - run.phase_users, counts={
                "pages": run.pages, "changedUsers": run.changed, "messagesQueued": run.queued})
            if not run.state.get("nextLink") or at_limit:
                break
    finally:
        if ahead is not None:  # the run failed while the next page was being read: nobody will handle it
            ahead.cancel()
            with contextlib.suppress(BaseException):
                await ahead


async def _refresh_index(services: Services) -> dict[str, Any]:
    """The holders index brought up to the registration report (one request when it is current). A failure
    only costs speed (the slow lane reads everyone the index does not name), so it is logged, not raised."""
    from shared.upn.holders import refresh_holders

    try:
        return await refresh_holders(services)
    except PasskeyGuardError as exc:
        log.warning("the passkey holders index was not refreshed (%s): %s", exc.code, exc.message)
        return {"error": exc.code}


async def sweep(services: Services, *, trigger: str = "timer", max_pages: int | None = None,
                actor: Actor = THE_APP) -> dict[str, Any]:
    """The backstop: read users/delta from the stored link, queue the changes, checkpoint every page.

    The first run seeds the UPN snapshot directly and flags no one. Later runs load every snapshot
    first and compare in memory: only changed users are queued (with their old UPN), new users'
    snapshots are written directly, unchanged users cost nothing. Changed users are queued grouped
    by storage bucket (`_SweepBuffer`), so some wait a few pages for their message; the stored link
    (with ETag) is always that of the oldest page with a user not yet queued, so a crash resumes
    there and may re-queue a few pages, which the idempotent processor absorbs. Each page's RU is
    charged to the tenant's budget, so the processors' lookups keep to Graph's pace around it. A 410
    or syncStateNotFound starts a full resync: every user is compared with the snapshot, so only
    real changes are flagged. The sweep is pipelined: the next page is requested as soon as a page
    arrives, so its Graph latency overlaps with handling the current one (the checkpoint still names a
    page only once the pages before it are handled).

    Beside the delta chain, the sweep brings the passkey holders index up to Graph's registration report
    (`shared.upn.holders`), so the processor can flag holders at once; its counts are the run's `holders`.

    Each sweep is a run in the `runs` table (kind `sweep`, who started it, its counts and result:
    `complete`, `incomplete` when `max_pages` stopped it, `failed`), and its progress is updated per page.
    """
    from shared.policy.runs import RunRecorder

    await services.graph.confirm_tenant()  # the right tenant before the run is recorded (wrongTenant: no row)
    recorder = RunRecorder(services, "sweep", trigger, actor=actor)  # binds the run id the messages carry
    started = time.monotonic()
    run: _SweepRun | None = None
    index = asyncio.create_task(_refresh_index(services))  # beside the delta chain: the report has its own limit
    try:
        run = _SweepRun(services, *await services.store.checkpoints.get(DELTA_CHECKPOINT))
        if not run.state.get("seeding"):
            # Every snapshot in memory (one query per partition), so unchanged users cost nothing, new users are
            # recorded here, and only changed users are queued, each with its old UPN.
            run.known = await services.store.snapshots.load_all(raw=True)
        await _read_all(services, run, recorder.progress, max_pages)
    except Exception as exc:  # the run says failed, with how far it got
        index.cancel()
        with contextlib.suppress(BaseException):
            await index
        await recorder.stopped(exc, **({} if run is None else {
            "pages": run.pages, "users": run.users, "changedUsers": run.changed, "messagesQueued": run.queued,
            "resyncs": run.resyncs}))
        raise
    counts = {"pages": run.pages, "users": run.users, "changedUsers": run.changed, "messagesQueued": run.queued,
              "resyncs": run.resyncs, "complete": not run.state.get("nextLink"), "seeded": run.seeded,
              "holders": await index, "seconds": round(time.monotonic() - started, 3)}
    await recorder.finish("complete" if counts["complete"] else "incomplete", **counts)
    return {"trigger": trigger, "runId": recorder.id, **counts}
