"""StateStore: everything Passkey Guard keeps in Table Storage, behind plain values, typed flag records and our
error tree.

The facade the rest of the app uses; each table lives in its own module, the shared plumbing in
`shared.state.tables`:

| table         | PartitionKey      | RowKey                                 | holds                              |
|---------------|-------------------|----------------------------------------|------------------------------------|
| `runs`        | tenant            | inverted µs timestamp `_` run id       | one row per run (newest first)     |
|               | tenant            | `id|` run id                           | pointer: run id -> run RowKey       |
| `plans`       | tenant            | plan id                                | plan JSON, state hash, applied     |
| `flags`       | `tenant|bNN` (16) | user id                                | the user's latest UPN-change case  |
| `snapshots`   | `tenant|bNN` (16) | `gNNN` (64 groups a bucket)            | last seen UPN of many users: one   |
|               |                   |                                        | property per user (`u`+GUID hex)   |
| `checkpoints` | tenant            | name, or `lease|` name                 | JSON values (delta links), leases  |
| `events`      | tenant            | event id (`h|` sha256 when too long)   | idempotency keys, `expires_at`     |

Each table has its module of the same name (`shared.state.runs`, ..., leases in `checkpoints`).

Every key starts with the tenant id, encoded by `safe_key`. Buckets are `crc32(user id) % N`: stable
across processes, so one tenant's writes spread over N partitions (one partition takes ~2,000
entities/s). Changing N orphans existing rows: don't. Flags and snapshots use the same N, so a user's
two rows share a bucket number: the sweep queues users grouped by bucket, and a message's writes are
then one transaction per table. Reads stay point reads: a filter with `RowKey eq a or RowKey eq b ...`
is a partition scan on Azure (and a table scan on Azurite), not a lookup.

Conventions: datetimes are timezone-aware `datetime` (Edm.DateTime, returned in UTC); documents
follow `shared.state.codec` (large JSON split/compressed transparently; `None` is not stored).
Rows that callers update with optimistic concurrency come back with their ETag: plans as an `"etag"`
key, checkpoints as `(value, etag)`, flags as `StoredFlag` records.
"""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from shared.config import POLICY_JOBS_QUEUE, Settings, StorageSettings
from shared.state.checkpoints import ABSENT, CheckpointTable
from shared.state.clients import StorageClients
from shared.state.errors import storage_errors
from shared.state.events import EventTable
from shared.state.flags import FlagTable, StoredFlag
from shared.state.plans import PlanTable
from shared.state.queue import ChangeQueue
from shared.state.runs import RunTable
from shared.state.snapshots import (
    SnapshotTable,
    snapshot_upn,
    split_snapshot,
)
from shared.state.tables import (
    CHECKPOINTS,
    EVENTS,
    FLAG_BUCKETS,
    FLAGS,
    PLANS,
    RUNS,
    SNAPSHOT_BUCKETS,
    SNAPSHOT_GROUPS,
    SNAPSHOTS,
    TABLES,
    Layout,
    Tables,
    utcnow,
)
from shared.upn.flag import Flag

log = logging.getLogger(__name__)

__all__ = [
    "ABSENT", "CHECKPOINTS", "EVENTS", "FLAGS", "FLAG_BUCKETS", "PLANS", "RUNS", "SNAPSHOTS", "SNAPSHOT_BUCKETS",
    "TABLES", "StateStore", "StoredFlag",
    # still imported from here by shared.upn.sweep; their home is shared.state.snapshots
    "snapshot_upn", "split_snapshot",
]


class StateStore:
    """Async access to one tenant's rows in Passkey Guard's tables, and to its queues (`.queue`,
    `.policy_jobs`). One per process; reuse it.

    Bound to its tenant at construction: each table is an attribute that needs no tenant id
    (`store.runs`, `.plans`, `.flags`, `.snapshots`, `.checkpoints` with the leases, `.events`).
    """

    def __init__(self, storage: StorageSettings, *, tenant_id: str, credential: Any = None,
                 connection_verify: bool | str | None = None, clock: Callable[[], dt.datetime] | None = None,
                 flag_buckets: int = FLAG_BUCKETS, snapshot_buckets: int = SNAPSHOT_BUCKETS,
                 snapshot_groups: int = SNAPSHOT_GROUPS,
                 retry_total: int = 3, concurrency: int = 16) -> None:
        """`tenant_id` starts every key this store reads or writes. `credential`/`connection_verify` serve
        the identity path in tests (default: managed identity); `clock` returns aware datetimes (tests
        move time for leases and events); bucket counts exist for tests only and must never change for
        stored data."""
        self._clients = StorageClients(storage, credential=credential, connection_verify=connection_verify,
                                       retry_total=retry_total)
        # In Azure (managed identity, no injected credential) the template creates tables and queues.
        creates = not (storage.uses_identity and credential is None)
        self.queue = ChangeQueue(self._clients, concurrency=concurrency, create=creates)
        self.policy_jobs = ChangeQueue(self._clients, POLICY_JOBS_QUEUE, concurrency=1, create=creates)
        self._tables = Tables(self._clients, creates=creates, clock=clock or utcnow, concurrency=concurrency,
                              queues=(self.queue, self.policy_jobs))
        self._layout = Layout(flag_buckets, snapshot_buckets, snapshot_groups)
        self._bind(tenant_id)

    def _bind(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.runs = RunTable(self._tables, tenant_id)
        self.plans = PlanTable(self._tables, tenant_id)
        self.flags = FlagTable(self._tables, tenant_id, self._layout)
        self.snapshots = SnapshotTable(self._tables, tenant_id, self._layout)
        self.checkpoints = CheckpointTable(self._tables, tenant_id)
        self.events = EventTable(self._tables, tenant_id)

    def for_tenant(self, tenant_id: str) -> StateStore:
        """The same clients, queues and layout bound to another tenant (tests and benchmarks that write
        under fresh tenants). Closing either closes both."""
        other = copy.copy(self)
        other._bind(tenant_id)
        return other

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> StateStore:
        """The store of the app's tenant (TENANT_ID), with the app's AZURE_CLIENT_ID when no storage client id
        is set."""
        storage = settings.storage
        if storage.uses_identity and storage.client_id is None and settings.azure_client_id:
            storage = dataclasses.replace(storage, client_id=settings.azure_client_id)
        return cls(storage, tenant_id=settings.tenant_id, **kwargs)

    async def __aenter__(self) -> StateStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- layout (tests only: must never change for stored data) ------------------------------------
    @property
    def flag_buckets(self) -> int:
        return self._layout.flag_buckets

    @flag_buckets.setter
    def flag_buckets(self, value: int) -> None:
        self._layout.flag_buckets = value

    @property
    def snapshot_buckets(self) -> int:
        return self._layout.snapshot_buckets

    @snapshot_buckets.setter
    def snapshot_buckets(self, value: int) -> None:
        self._layout.snapshot_buckets = value

    @property
    def snapshot_groups(self) -> int:
        return self._layout.snapshot_groups

    @snapshot_groups.setter
    def snapshot_groups(self, value: int) -> None:
        self._layout.snapshot_groups = value

    # --- plumbing --------------------------------------------------------------------------------
    async def ensure(self, *, force: bool = False) -> None:
        """Create the six tables and the queues if absent (never with a managed identity: see `Tables.ensure`)."""
        await self._tables.ensure(force=force)

    async def close(self) -> None:
        """Close the SDK clients and the HTTP session (and a managed-identity credential we made)."""
        await self._clients.close()
        self._tables.ensured = False

    async def ping(self, within: float = 5.0) -> bool:
        """True when tables and queue answer within `within` seconds (for /api/health); never raises."""
        try:
            async with asyncio.timeout(within):
                await self.ensure()
                client = await self._clients.table(CHECKPOINTS)
                with storage_errors("pinging table storage"):
                    pager = client.query_entities("PartitionKey eq @pk", parameters={"pk": "~ping"},
                                                  results_per_page=1)
                    async for _ in pager:
                        break
                await self.queue.peek_count()
            return True
        except Exception as exc:  # a health probe reports, it doesn't raise
            log.warning("storage ping failed: %s", type(exc).__name__)
            return False

    # --- the tenant-threaded API (callers move to the bound tables above; then these go) ----------
    # --- runs (shared.state.runs) -------------------------------------------------------------------
    async def put_run(self, tenant_id: str, run: Mapping[str, Any]) -> None:
        """Create or replace a run (its `started_at` fixes its place in the newest-first listing)."""
        await RunTable(self._tables, tenant_id).put(run)

    async def get_run(self, tenant_id: str, run_id: str) -> dict[str, Any]:
        """The run document; NotFound when there is none."""
        return await RunTable(self._tables, tenant_id).get(run_id)

    async def list_runs(self, tenant_id: str, limit: int = 20,
                        page_token: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Runs newest first, `limit` per page; the second value is the next page's token or None."""
        return await RunTable(self._tables, tenant_id).page(limit, page_token)

    # --- plans (shared.state.plans) -----------------------------------------------------------------
    async def put_plan(self, tenant_id: str, plan_id: str, plan: Mapping[str, Any], state_hash: str) -> str:
        """Store a new plan (an existing id raises ConcurrencyError); returns its ETag."""
        return await PlanTable(self._tables, tenant_id).put(plan_id, plan, state_hash)

    async def get_plan(self, tenant_id: str, plan_id: str) -> dict[str, Any]:
        """`{id, plan, state_hash, created_at, applied, applied_at?, applied_run_id?, etag}`; NotFound if absent."""
        return await PlanTable(self._tables, tenant_id).get(plan_id)

    async def mark_plan_applied(self, tenant_id: str, plan_id: str, etag: str, *,
                                run_id: str | None = None) -> str:
        """Set `applied`/`applied_at` if the plan still has `etag` (ConcurrencyError otherwise); new ETag."""
        return await PlanTable(self._tables, tenant_id).mark_applied(plan_id, etag, run_id=run_id)

    # --- flags (shared.state.flags) -----------------------------------------------------------------
    async def get_flag(self, tenant_id: str, user_id: str) -> StoredFlag | None:
        """The user's flag with its ETag, or None."""
        return await FlagTable(self._tables, tenant_id, self._layout).get(user_id)

    async def create_flags(self, tenant_id: str, flags: Iterable[Flag]) -> list[str]:
        """Create the flags of users who have none; returns their ids (an existing row is never touched:
        see `FlagTable.create`)."""
        return await FlagTable(self._tables, tenant_id, self._layout).create(flags)

    async def update_flag(self, tenant_id: str, flag: Flag, etag: str, *,
                          created_at: dt.datetime | None = None) -> str:
        """Replace a flag if it still has `etag` (ConcurrencyError otherwise, NotFound if gone); new ETag."""
        return await FlagTable(self._tables, tenant_id, self._layout).update(flag, etag, created_at=created_at)

    async def list_flags(self, tenant_id: str, status: str | None = None, limit: int = 100,
                         page_token: str | None = None) -> tuple[list[StoredFlag], str | None]:
        """Flags ordered by user id across all buckets, optionally of one `status`; stable opaque paging."""
        return await FlagTable(self._tables, tenant_id, self._layout).page(status, limit, page_token)

    def iter_flags(self, tenant_id: str, status: str | None = None) -> AsyncIterator[StoredFlag]:
        """Every flag (optionally of one `status`), ordered by user id, fetched page by page."""
        return FlagTable(self._tables, tenant_id, self._layout).every(status)

    # --- snapshots (shared.state.snapshots) ---------------------------------------------------------
    async def get_snapshots(self, tenant_id: str, user_ids: Iterable[str]) -> dict[str, str]:
        """Last seen UPN per user id (users never seen or deleted are absent); one point read per row."""
        return await SnapshotTable(self._tables, tenant_id, self._layout).get(user_ids)

    async def get_snapshots_seen(self, tenant_id: str, user_ids: Iterable[str]
                                 ) -> dict[str, tuple[str, dt.datetime | None]]:
        """`get_snapshots` with, per user, when that UPN was last read from Graph (None: not recorded)."""
        return await SnapshotTable(self._tables, tenant_id, self._layout).get_seen(user_ids)

    async def put_snapshots(self, tenant_id: str, upns: Mapping[str, str],
                            seen_at: Mapping[str, dt.datetime] | None = None) -> int:
        """Record last seen UPNs (with when each was read from Graph, if known); returns how many."""
        return await SnapshotTable(self._tables, tenant_id, self._layout).put(upns, seen_at)

    async def delete_snapshots(self, tenant_id: str, user_ids: Iterable[str]) -> None:
        """Forget users (deleted accounts); never-seen users are fine."""
        await SnapshotTable(self._tables, tenant_id, self._layout).delete(user_ids)

    def iter_snapshot_rows(self, tenant_id: str) -> AsyncIterator[dict[str, str]]:
        """Every snapshot row of the tenant as `{user id: UPN}`, one partition after another."""
        return SnapshotTable(self._tables, tenant_id, self._layout).rows()

    async def load_all_snapshots(self, tenant_id: str, *, raw: bool = False) -> dict[str, str]:
        """The whole snapshot table as `{user id: UPN}` (`raw`: the stored values, with the seen times)."""
        return await SnapshotTable(self._tables, tenant_id, self._layout).load_all(raw=raw)

    async def count_snapshots(self, tenant_id: str) -> int:
        """How many users have a snapshot (deleted users not counted)."""
        return await SnapshotTable(self._tables, tenant_id, self._layout).count()

    # --- checkpoints and leases (shared.state.checkpoints) ------------------------------------------
    async def get_checkpoint(self, tenant_id: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """`(value, etag)`, or `(None, None)` when the checkpoint was never written."""
        return await CheckpointTable(self._tables, tenant_id).get(name)

    async def put_checkpoint(self, tenant_id: str, name: str, value: Mapping[str, Any],
                             etag: str | None = None) -> str:
        """Write a checkpoint (unconditional, only if ABSENT, or only while it has `etag`); new ETag."""
        return await CheckpointTable(self._tables, tenant_id).put(name, value, etag)

    async def delete_checkpoint(self, tenant_id: str, name: str) -> None:
        """Remove a checkpoint (e.g. a delta link after `syncStateNotFound`); missing is fine."""
        await CheckpointTable(self._tables, tenant_id).delete(name)

    async def acquire_lease(self, tenant_id: str, name: str, owner: str, seconds: float) -> bool:
        """Take (or renew, for the same `owner`) lease `name` for `seconds`; False while another holds it."""
        return await CheckpointTable(self._tables, tenant_id).acquire_lease(name, owner, seconds)

    async def release_lease(self, tenant_id: str, name: str, owner: str) -> bool:
        """Give up a lease `owner` holds; False when it is not (or no longer) theirs."""
        return await CheckpointTable(self._tables, tenant_id).release_lease(name, owner)

    async def renew_lease(self, tenant_id: str, name: str, owner: str, seconds: float) -> bool:
        """Extend a lease `owner` still holds by `seconds` from now; False when it is gone or another's."""
        return await CheckpointTable(self._tables, tenant_id).renew_lease(name, owner, seconds)

    # --- events (shared.state.events) ---------------------------------------------------------------
    async def claim_event(self, tenant_id: str, event_id: str, ttl_seconds: float) -> bool:
        """True the first time `event_id` is seen (or after its claim expired); False for a repeat."""
        return await EventTable(self._tables, tenant_id).claim(event_id, ttl_seconds)

    async def forget_event(self, tenant_id: str, event_id: str) -> None:
        """Drop a claim (roll back when processing failed, so a retry is not mistaken for a repeat)."""
        await EventTable(self._tables, tenant_id).forget(event_id)

    async def purge_events(self, tenant_id: str) -> int:
        """Delete expired claims (Table Storage has no TTL); returns how many were removed."""
        return await EventTable(self._tables, tenant_id).purge()
