"""The table plumbing every per-table module shares: one `Tables` per store (SDK clients, the lazy
create-once of tables and queues, error translation, transactions, bounded gathering, the clock) and
the ETag helpers (update while unchanged, replace while still the row we read, create or take over).

Each table's module (`runs`, `plans`, `flags`, `snapshots`, `checkpoints`, `events`, `holders`) maps its rows
explicitly and runs its work through `Tables.op`; `shared.state.store.StateStore` is the facade.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient

from shared.errors import InputError, PasskeyGuardError, StateError
from shared.state import fastpath
from shared.state.clients import StorageClients
from shared.state.codec import MAX_BATCH_OPERATIONS
from shared.state.errors import container_missing, is_conflict, storage_errors
from shared.state.keys import safe_key

log = logging.getLogger(__name__)
T = TypeVar("T")

RUNS, PLANS, FLAGS, SNAPSHOTS, CHECKPOINTS, EVENTS = "runs", "plans", "flags", "snapshots", "checkpoints", "events"
HOLDERS = "holders"
TABLES: tuple[str, ...] = (RUNS, PLANS, FLAGS, SNAPSHOTS, CHECKPOINTS, EVENTS, HOLDERS)
MAX_PAGE = 1000
FLAG_BUCKETS = 16
SNAPSHOT_BUCKETS = FLAG_BUCKETS  # the same bucket for a user's flag and snapshot (see shared.state.store)
#: Snapshot rows per bucket: 16 x 64 = 1,024 rows, ~98 users a row at 100k users (the fullest of 1,024
#: rows ~135); a row holds at most MAX_CUSTOM_PROPERTIES users (Table Storage's limit), so ~190k users.
SNAPSHOT_GROUPS = 64
REPLACE = {"mode": UpdateMode.REPLACE}
MERGE = {"mode": UpdateMode.MERGE}


@dataclass
class Layout:
    """How a tenant's users spread over partitions (buckets) and snapshot rows (groups). Tests shrink it;
    for stored data it must never change (rows would be orphaned)."""

    flag_buckets: int = FLAG_BUCKETS
    snapshot_buckets: int = SNAPSHOT_BUCKETS
    snapshot_groups: int = SNAPSHOT_GROUPS


class Ensurable(Protocol):
    """A queue the store creates together with its tables."""

    async def ensure(self, *, force: bool = False) -> None: ...


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def tenant_pk(tenant_id: str) -> str:
    """The PartitionKey of a tenant's unbucketed tables (runs, plans, checkpoints, events)."""
    return safe_key(tenant_id, what="tenant id")


def require_str(doc: Mapping[str, Any], field: str, what: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} needs a non-empty string {field!r}")
    return value


def etag_of(metadata_or_entity: Any) -> str:
    """The ETag of an entity read, or of the metadata a write answered."""
    if isinstance(metadata_or_entity, TableEntity):
        return str(metadata_or_entity.metadata["etag"])
    return str(metadata_or_entity["etag"])


def entity_missing(exc: BaseException) -> bool:
    """A 404 for the row (not for its table, which `Tables.op` recreates)."""
    return isinstance(exc, ResourceNotFoundError) and not container_missing(exc)


def check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit must be between 1 and {MAX_PAGE}")


def page_after(state: Mapping[str, Any]) -> str:
    """The last RowKey a page token says was returned."""
    after = state.get("after")
    if not isinstance(after, str) or not after:
        raise InputError("page token is malformed")
    return after


async def get_entity(client: TableClient, pk: str, rk: str, **kwargs: Any) -> TableEntity | None:
    """One row, or None when it does not exist (a missing table propagates so `Tables.op` recreates it)."""
    try:
        return await client.get_entity(pk, rk, **kwargs)
    except ResourceNotFoundError as exc:
        if container_missing(exc):
            raise
        return None


async def update_if_unchanged(client: TableClient, entity: Mapping[str, Any], etag: str, mode: UpdateMode,
                              missing: PasskeyGuardError) -> str:
    """Update `entity` only while the row still has `etag`; a gone row raises `missing`. Returns the new ETag.

    A stale ETag surfaces as a 412, which `Tables.op` maps to ConcurrencyError; a missing table propagates
    so `Tables.op` can recreate it.
    """
    try:
        return etag_of(await client.update_entity(entity, mode=mode, etag=etag,
                                                  match_condition=MatchConditions.IfNotModified))
    except ResourceNotFoundError as exc:
        if container_missing(exc):
            raise
        raise missing from None


async def replace_if_still(client: TableClient, entity: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Replace the row with `entity` while it is still `current` (its ETag); False when somebody else wrote or
    deleted it first. Leases and event claims are races by design: losing one is an answer, not an error."""
    try:
        await client.update_entity(entity, mode=UpdateMode.REPLACE, etag=etag_of(current),
                                   match_condition=MatchConditions.IfNotModified)
        return True
    except HttpResponseError as exc:
        if is_conflict(exc) or entity_missing(exc):
            return False
        raise


async def create_or_take_over(client: TableClient, entity: Mapping[str, Any],
                              take_over: Callable[[TableEntity], Mapping[str, Any] | None], *,
                              current: TableEntity | None = None, attempts: int = 3) -> bool | None:
    """Create `entity`'s row; when it exists, `take_over(current row)` gives the row to replace it with
    (None: leave it, the answer is False), written only while the row is still the one read.

    True when written. Of two racing writers exactly one wins: a create that meets a row, or a replace
    that meets a newer ETag, reads again, up to `attempts` rounds; None when they all ran out. A row
    deleted meanwhile is created again. `current`: the row as already read (skips the first create).
    """
    pk, rk = entity["PartitionKey"], entity["RowKey"]
    row = current
    for _ in range(attempts):
        if row is None:
            try:
                await client.create_entity(entity)
                return True
            except ResourceExistsError:
                pass
            row = await get_entity(client, pk, rk)
            if row is None:
                continue  # deleted meanwhile: create again
        replacement = take_over(row)
        if replacement is None:
            return False
        if await replace_if_still(client, replacement, row):
            return True
        row = None
    return None


class Tables:
    """The shared plumbing of one store: clients, table creation, error translation, transactions."""

    def __init__(self, clients: StorageClients, *, creates: bool, clock: Callable[[], dt.datetime],
                 concurrency: int, queues: Sequence[Ensurable] = ()) -> None:
        """`creates` False (managed identity in Azure): the template made every table and queue; `queues`
        are created together with the tables."""
        self.clients = clients
        self.creates = creates
        self.concurrency = concurrency
        self._clock = clock
        self._queues = tuple(queues)
        self.ensured = False
        self._ensure_lock = asyncio.Lock()

    def now(self) -> dt.datetime:
        """The store clock's time (it must be timezone-aware)."""
        now = self._clock()
        if now.tzinfo is None:
            raise StateError("the store's clock must return timezone-aware datetimes")
        return now

    async def ensure(self, *, force: bool = False) -> None:
        """Create the tables and the queues if absent; idempotent and cached after the first success.

        With a managed identity (Azure) nothing is created: the Bicep template creates every table and
        queue, and the identity's roles are scoped to each of them, so a create call would be refused.
        """
        if self.ensured and not force:
            return
        if not self.creates:
            self.ensured = True
            return
        async with self._ensure_lock:
            if self.ensured and not force:
                return
            service = await self.clients.table_service()

            async def create(name: str) -> None:
                with storage_errors(f"creating table {name}"):
                    try:
                        await service.create_table(name)
                    except ResourceExistsError:
                        pass

            await asyncio.gather(*(create(n) for n in TABLES), *(q.ensure(force=True) for q in self._queues))
            self.ensured = True

    async def op(self, table: str, action: str, func: Callable[[TableClient], Awaitable[T]]) -> T:
        """Run `func(table client)` with errors translated; recreate tables once if they vanished."""
        for attempt in range(2):
            await self.ensure()
            client = await self.clients.table(table)
            try:
                with storage_errors(action):
                    return await func(client)
            except StateError as exc:
                if attempt == 0 and exc.__cause__ is not None and container_missing(exc.__cause__):
                    log.warning("table %s missing; recreating tables", table)
                    self.ensured = False
                    continue
                raise
        raise AssertionError("unreachable")

    async def submit_transaction(self, client: TableClient, operations: list[tuple[Any, ...]]) -> None:
        """Send one entity-group transaction: never empty, never > 100 operations, one PartitionKey."""
        if not operations:
            return
        if len(operations) > MAX_BATCH_OPERATIONS:
            raise StateError(f"refusing a transaction of {len(operations)} operations (limit {MAX_BATCH_OPERATIONS})")
        if len({op[1]["PartitionKey"] for op in operations}) != 1:
            raise StateError("refusing a transaction across partitions")
        if isinstance(client, TableClient):
            await fastpath.submit(client, operations)  # the SDK's pipeline, ~10x less CPU (see module)
        else:
            await client.submit_transaction(operations)  # a stand-in client (tests)

    async def transaction(self, table: str, action: str, operations: list[tuple[Any, ...]]) -> None:
        """`submit_transaction` through `op` (errors translated, tables recreated once)."""
        await self.op(table, action, lambda client: self.submit_transaction(client, operations))

    async def gather(self, coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
        """Run coroutines with at most `concurrency` in flight; on the first failure cancel the rest."""
        limit = asyncio.Semaphore(self.concurrency)

        async def guarded(coro: Coroutine[Any, Any, T]) -> T:
            async with limit:
                return await coro

        tasks = [asyncio.ensure_future(guarded(c)) for c in coros]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
