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
| `holders`     | `tenant|bNN` (16) | `gNNN` (64 groups a bucket)            | passkey holders from Graph's       |
|               |                   |                                        | registration report: `"1"` a user  |
|               | tenant            | `meta`                                 | report refresh time, read at, count|

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
from collections.abc import Callable
from typing import Any

from shared.config import PASSKEY_READS_QUEUE, POLICY_JOBS_QUEUE, Settings, StorageSettings
from shared.state.checkpoints import CheckpointTable
from shared.state.clients import StorageClients
from shared.state.errors import storage_errors
from shared.state.events import EventTable
from shared.state.flags import FlagTable
from shared.state.holders import HolderIndex
from shared.state.plans import PlanTable
from shared.state.queue import ChangeQueue
from shared.state.runs import RunTable
from shared.state.snapshots import SnapshotTable
from shared.state.tables import (
    CHECKPOINTS,
    FLAG_BUCKETS,
    SNAPSHOT_BUCKETS,
    SNAPSHOT_GROUPS,
    Layout,
    Tables,
    utcnow,
)

log = logging.getLogger(__name__)


class StateStore:
    """Async access to one tenant's rows in Passkey Guard's tables, and to its queues (`.queue`,
    `.policy_jobs`). One per process; reuse it.

    Bound to its tenant at construction: each table is an attribute that needs no tenant id
    (`store.runs`, `.plans`, `.flags`, `.snapshots`, `.checkpoints` with the leases, `.events`, `.holders`).
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
        self.passkey_reads = ChangeQueue(self._clients, PASSKEY_READS_QUEUE, concurrency=concurrency, create=creates)
        self._tables = Tables(self._clients, creates=creates, clock=clock or utcnow, concurrency=concurrency,
                              queues=(self.queue, self.policy_jobs, self.passkey_reads))
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
        self.holders = HolderIndex(self._tables, tenant_id, self._layout)

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
        """Create the tables and the queues if absent (never with a managed identity: see `Tables.ensure`)."""
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
