"""StateStore: everything Passkey Guard keeps in Table Storage, behind plain dicts and our error tree.

Tables and keys (every key starts with the tenant id, encoded by `safe_key`):

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

Buckets are `crc32(user id) % N`: stable across processes, so one tenant's writes spread over N
partitions (one partition takes ~2,000 entities/s). Changing N orphans existing rows: don't.
Flags and snapshots use the same N, so a user's two rows share a bucket number: the sweep queues
users grouped by bucket, and a message's writes are then one transaction per table. Reads stay point
reads: a filter with `RowKey eq a or RowKey eq b ...` is a partition scan on Azure (and a table scan
on Azurite), not a lookup.

Conventions: datetimes are timezone-aware `datetime` (Edm.DateTime, returned in UTC); documents
follow `shared.state.codec` (large JSON split/compressed transparently; `None` is not stored).
Rows that callers update with optimistic concurrency come back with an `"etag"` key.
"""
from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import heapq
import logging
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient

from shared.config import POLICY_JOBS_QUEUE, Settings, StorageSettings
from shared.errors import ConcurrencyError, InputError, NotFound, PasskeyGuardError, StateError
from shared.ids import is_guid
from shared.state import fastpath
from shared.state.clients import StorageClients
from shared.state.codec import (
    MAX_BATCH_OPERATIONS,
    MAX_CUSTOM_PROPERTIES,
    check_entity,
    chunk_operations,
    decode_document,
    encode_document,
    plain_value,
)
from shared.state.errors import container_missing, is_conflict, storage_errors
from shared.state.keys import (
    SEPARATOR,
    bucket_of,
    bucket_partition,
    decode_page_token,
    encode_page_token,
    inverted_time,
    safe_key,
)
from shared.state.queue import ChangeQueue

log = logging.getLogger(__name__)
T = TypeVar("T")

RUNS, PLANS, FLAGS, SNAPSHOTS, CHECKPOINTS, EVENTS = "runs", "plans", "flags", "snapshots", "checkpoints", "events"
TABLES: tuple[str, ...] = (RUNS, PLANS, FLAGS, SNAPSHOTS, CHECKPOINTS, EVENTS)
FLAG_BUCKETS = 16
SNAPSHOT_BUCKETS = FLAG_BUCKETS  # the same bucket for a user's flag and snapshot (see above)
#: Snapshot rows per bucket: 16 x 64 = 1,024 rows, ~98 users a row at 100k users (the fullest of 1,024
#: rows ~135); a row holds at most MAX_CUSTOM_PROPERTIES users (Table Storage's limit), so ~190k users.
SNAPSHOT_GROUPS = 64
MAX_PROPERTY_NAME = 255
#: `put_checkpoint(..., etag=ABSENT)` creates the row only if it does not exist yet.
ABSENT = "absent"
FLAG_STATUS_OPEN = "pending"
#: How many superseded cases a flag row keeps in its `previous` list (newest first).
MAX_PREVIOUS_CASES = 5
MAX_PAGE = 1000

_RUN_INDEX = "id" + SEPARATOR
_RUN_ROWS_END = ":"  # run rows start with digits, pointer rows with "id|"
_LEASE = "lease" + SEPARATOR
_HASHED_EVENT = "h" + SEPARATOR
_REPLACE = {"mode": UpdateMode.REPLACE}
_MERGE = {"mode": UpdateMode.MERGE}
_MAX_SELECT = 40  # more properties than this: read the whole row (the URL stays short)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _tenant_pk(tenant_id: str) -> str:
    return safe_key(tenant_id, what="tenant id")


def _require_str(doc: Mapping[str, Any], field: str, what: str) -> str:
    value = doc.get(field)
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} needs a non-empty string {field!r}")
    return value


def _etag(metadata_or_entity: Any) -> str:
    if isinstance(metadata_or_entity, TableEntity):
        return str(metadata_or_entity.metadata["etag"])
    return str(metadata_or_entity["etag"])


def _entity_missing(exc: BaseException) -> bool:
    return isinstance(exc, ResourceNotFoundError) and not container_missing(exc)


async def _update_if_unchanged(client: TableClient, entity: Mapping[str, Any], etag: str, mode: UpdateMode,
                               missing: PasskeyGuardError) -> str:
    """Update `entity` only while the row still has `etag`; a gone row raises `missing`. Returns the new ETag.

    A stale ETag surfaces as a 412, which `_op` maps to ConcurrencyError; a missing table propagates so
    `_op` can recreate it.
    """
    try:
        return _etag(await client.update_entity(entity, mode=mode, etag=etag,
                                                match_condition=MatchConditions.IfNotModified))
    except ResourceNotFoundError as exc:
        if container_missing(exc):
            raise
        raise missing from None


async def _replace_if_still(client: TableClient, entity: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Replace the row with `entity` while it is still `current` (its ETag); False when somebody else wrote or
    deleted it first. Leases and event claims are races by design: losing one is an answer, not an error."""
    try:
        await client.update_entity(entity, mode=UpdateMode.REPLACE, etag=_etag(current),
                                   match_condition=MatchConditions.IfNotModified)
        return True
    except HttpResponseError as exc:
        if is_conflict(exc) or _entity_missing(exc):
            return False
        raise


# --- explicit entity mapping, one pair per table -------------------------------------------------------
def run_to_entities(tenant_id: str, run: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run row and its pointer row. `run` needs `id` (str) and `started_at` (aware datetime)."""
    run_id = _require_str(run, "id", "a run")
    started = run.get("started_at")
    if not isinstance(started, dt.datetime) or started.tzinfo is None:
        raise InputError("a run needs 'started_at' as a timezone-aware datetime")
    pk = _tenant_pk(tenant_id)
    row = f"{inverted_time(started)}_{safe_key(run_id, what='run id')}"
    main = {"PartitionKey": pk, "RowKey": row, **encode_document(run)}
    pointer = {"PartitionKey": pk, "RowKey": _RUN_INDEX + safe_key(run_id, what="run id"), "run_row": row}
    return main, pointer


def run_from_entity(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The run document."""
    return decode_document(entity)


def plan_to_entity(tenant_id: str, plan_id: str, plan: Mapping[str, Any], state_hash: str,
                   created_at: dt.datetime) -> dict[str, Any]:
    """A plan row: the plan JSON, the state hash it was made from, and `applied` False."""
    if not isinstance(state_hash, str) or not state_hash:
        raise InputError("a plan needs a non-empty state hash")
    doc = {"id": plan_id, "plan": dict(plan), "state_hash": state_hash, "created_at": created_at, "applied": False}
    return {"PartitionKey": _tenant_pk(tenant_id), "RowKey": safe_key(plan_id, what="plan id"),
            **encode_document(doc)}


def plan_from_entity(entity: TableEntity) -> dict[str, Any]:
    """`{id, plan, state_hash, created_at, applied, applied_at?, applied_run_id?, etag}`."""
    doc = decode_document(entity)
    doc["etag"] = _etag(entity)
    return doc


def flag_to_entity(tenant_id: str, flag: Mapping[str, Any], buckets: int) -> dict[str, Any]:
    """A flag row; `flag` needs `userId` and `newUpn`; an `etag` key is ignored."""
    user_id = _require_str(flag, "userId", "a flag")
    _require_str(flag, "newUpn", "a flag")
    doc = {k: v for k, v in flag.items() if k != "etag"}
    return {"PartitionKey": bucket_partition(tenant_id, bucket_of(user_id, buckets)),
            "RowKey": safe_key(user_id, what="user id"), **encode_document(doc)}


def flag_from_entity(entity: TableEntity) -> dict[str, Any]:
    """The flag document plus its `etag`."""
    doc = decode_document(entity)
    doc["etag"] = _etag(entity)
    return doc


def snapshot_property(user_id: str) -> str:
    """The property that holds `user_id`'s UPN in its grouped snapshot row (reversible: `snapshot_user`).

    A lowercase GUID (Graph's ids) is `u` + its 32 hex digits; anything else is `x` + the hex of its
    UTF-8 bytes (a valid property name whatever the id holds; at most 255 characters, so 127 bytes)."""
    if not isinstance(user_id, str) or not user_id:
        raise InputError("user id must be a non-empty string")
    if is_guid(user_id) and user_id == user_id.lower():
        return "u" + user_id.replace("-", "")
    try:
        raw = user_id.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("user id is not valid Unicode text") from None
    if 1 + 2 * len(raw) > MAX_PROPERTY_NAME:
        raise InputError(f"user id is too long for a snapshot ({len(raw)} bytes; at most "
                         f"{(MAX_PROPERTY_NAME - 1) // 2})")
    return "x" + raw.hex()


def snapshot_user(name: str) -> str | None:
    """The user id of a snapshot property name, or None for anything else (keys, metadata)."""
    if len(name) == 33 and name[0] == "u":
        h = name[1:]
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    if name[:1] == "x" and len(name) > 1:
        try:
            return bytes.fromhex(name[1:]).decode("utf-8")
        except ValueError:
            return None
    return None


def snapshot_row(user_id: str, buckets: int, groups: int) -> tuple[int, int]:
    """(bucket, group) of a user's snapshot: the bucket is `bucket_of` (the flag's too); the group
    uses the CRC's higher part, so it is independent of the bucket and as stable."""
    crc = zlib.crc32(user_id.encode("utf-8"))
    return crc % buckets, (crc // buckets) % groups


def snapshot_row_key(group: int) -> str:
    return f"g{group:03d}"


def snapshot_to_entity(tenant_id: str, user_id: str, upn: str, buckets: int, now: dt.datetime,
                       groups: int = SNAPSHOT_GROUPS) -> dict[str, Any]:
    """A MERGE into a user's grouped snapshot row carrying that user's last seen UPN only."""
    del now  # the row's Timestamp says when it last changed
    if not isinstance(upn, str) or not upn:
        raise InputError("a snapshot needs a non-empty UPN")
    bucket, group = snapshot_row(user_id, buckets, groups)
    return {"PartitionKey": bucket_partition(tenant_id, bucket), "RowKey": snapshot_row_key(group),
            snapshot_property(user_id): upn}


def snapshot_value(upn: str, seen_at: dt.datetime | None) -> str:
    """A user's snapshot property: the UPN, then (when known) a space and the moment the product read
    that UPN from Graph, so stale-passkey removal knows when the old UPN was last confirmed. A UPN
    never holds a space (Entra allows letters, digits and ' . - _ ! # ^ ~ @); `split_snapshot` reads it back."""
    if seen_at is None:
        return upn
    return f"{upn} {seen_at.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


_SEEN_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def snapshot_upn(value: str) -> str:
    """The UPN of a snapshot property (`split_snapshot` without parsing the time: the bulk load's path)."""
    upn, space, seen = value.rpartition(" ")
    return upn if space and _SEEN_AT.fullmatch(seen) else value


def split_snapshot(value: str) -> tuple[str, dt.datetime | None]:
    """(UPN, seen at or None) of a snapshot property; values written before the time was kept have none."""
    upn, space, seen = value.rpartition(" ")
    if not space or not _SEEN_AT.fullmatch(seen):
        return value, None
    return upn, dt.datetime.fromisoformat(seen)


def checkpoint_to_entity(tenant_id: str, name: str, value: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A checkpoint row: `value` as JSON plus `updated_at`."""
    if not isinstance(value, Mapping):
        raise InputError("a checkpoint value must be a JSON object")
    return {"PartitionKey": _tenant_pk(tenant_id), "RowKey": safe_key(name, what="checkpoint name"),
            **encode_document({"value": dict(value), "updated_at": now})}


def checkpoint_from_entity(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The stored checkpoint value."""
    value = decode_document(entity).get("value")
    return dict(value) if isinstance(value, dict) else {}


def lease_to_entity(tenant_id: str, name: str, owner: str, now: dt.datetime, seconds: float) -> dict[str, Any]:
    """A lease row (in `checkpoints`): owner and expiry."""
    return {"PartitionKey": _tenant_pk(tenant_id), "RowKey": _LEASE + safe_key(name, what="lease name"),
            **encode_document({"owner": owner, "acquired_at": now,
                               "expires_at": now + dt.timedelta(seconds=seconds)})}


def event_row_key(event_id: str) -> str:
    """The RowKey of an idempotency key; over-long ids are hashed so any external id can be claimed."""
    if not isinstance(event_id, str) or not event_id:
        raise InputError("event id must be a non-empty string")
    try:
        key = safe_key(event_id, what="event id")
    except InputError:
        key = ""
    if not key or len(key) > 250:
        return _HASHED_EVENT + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()
    return key


def event_to_entity(tenant_id: str, event_id: str, now: dt.datetime, ttl_seconds: float) -> dict[str, Any]:
    """An idempotency row: when it was claimed and when the claim expires."""
    return {"PartitionKey": _tenant_pk(tenant_id), "RowKey": event_row_key(event_id),
            **encode_document({"claimed_at": now, "expires_at": now + dt.timedelta(seconds=ttl_seconds)})}


# --- the store -------------------------------------------------------------------------------------
class StateStore:
    """Async access to Passkey Guard's tables and its queue (`.queue`). One per process; reuse it."""

    def __init__(self, storage: StorageSettings, *, credential: Any = None,
                 connection_verify: bool | str | None = None, clock: Callable[[], dt.datetime] | None = None,
                 flag_buckets: int = FLAG_BUCKETS, snapshot_buckets: int = SNAPSHOT_BUCKETS,
                 snapshot_groups: int = SNAPSHOT_GROUPS,
                 retry_total: int = 3, concurrency: int = 16) -> None:
        """`credential`/`connection_verify` serve the identity path in tests (default: managed identity);
        `clock` returns aware datetimes (tests move time for leases and events); bucket counts exist
        for tests only and must never change for stored data."""
        self._clients = StorageClients(storage, credential=credential, connection_verify=connection_verify,
                                       retry_total=retry_total)
        # In Azure (managed identity, no injected credential) the template creates tables and queues.
        self._creates = not (storage.uses_identity and credential is None)
        self.queue = ChangeQueue(self._clients, concurrency=concurrency, create=self._creates)
        self.policy_jobs = ChangeQueue(self._clients, POLICY_JOBS_QUEUE, concurrency=1, create=self._creates)
        self._clock = clock or _utcnow
        self.flag_buckets = flag_buckets
        self.snapshot_buckets = snapshot_buckets
        self.snapshot_groups = snapshot_groups
        self._concurrency = concurrency
        self._ensured = False
        self._ensure_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> StateStore:
        """The store for the app's settings (the app's AZURE_CLIENT_ID when no storage client id is set)."""
        storage = settings.storage
        if storage.uses_identity and storage.client_id is None and settings.azure_client_id:
            storage = dataclasses.replace(storage, client_id=settings.azure_client_id)
        return cls(storage, **kwargs)

    async def __aenter__(self) -> StateStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _now(self) -> dt.datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise StateError("the store's clock must return timezone-aware datetimes")
        return now

    # --- plumbing --------------------------------------------------------------------------------
    async def ensure(self, *, force: bool = False) -> None:
        """Create the six tables and the queue if absent; idempotent and cached after the first success.

        With a managed identity (Azure) nothing is created: the Bicep template creates every table and
        queue, and the identity's roles are scoped to each of them, so a create call would be refused.
        """
        if self._ensured and not force:
            return
        if not self._creates:
            self._ensured = True
            return
        async with self._ensure_lock:
            if self._ensured and not force:
                return
            service = await self._clients.table_service()

            async def create(name: str) -> None:
                with storage_errors(f"creating table {name}"):
                    try:
                        await service.create_table(name)
                    except ResourceExistsError:
                        pass

            await asyncio.gather(*(create(n) for n in TABLES), self.queue.ensure(force=True),
                                 self.policy_jobs.ensure(force=True))
            self._ensured = True

    async def close(self) -> None:
        """Close the SDK clients and the HTTP session (and a managed-identity credential we made)."""
        await self._clients.close()
        self._ensured = False

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

    async def _op(self, table: str, action: str, func: Callable[[TableClient], Awaitable[T]]) -> T:
        """Run `func(table client)` with errors translated; recreate tables once if they vanished."""
        for attempt in range(2):
            await self.ensure()
            client = await self._clients.table(table)
            try:
                with storage_errors(action):
                    return await func(client)
            except StateError as exc:
                if attempt == 0 and exc.__cause__ is not None and container_missing(exc.__cause__):
                    log.warning("table %s missing; recreating tables", table)
                    self._ensured = False
                    continue
                raise
        raise AssertionError("unreachable")

    async def _submit_transaction(self, client: TableClient, operations: list[tuple[Any, ...]]) -> None:
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

    async def _gather(self, coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
        """Run coroutines with at most `concurrency` in flight; on the first failure cancel the rest."""
        limit = asyncio.Semaphore(self._concurrency)

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

    async def _get(self, client: TableClient, pk: str, rk: str, **kwargs: Any) -> TableEntity | None:
        try:
            return await client.get_entity(pk, rk, **kwargs)
        except ResourceNotFoundError as exc:
            if container_missing(exc):
                raise
            return None

    # --- runs --------------------------------------------------------------------------------------
    async def put_run(self, tenant_id: str, run: Mapping[str, Any]) -> None:
        """Create or replace a run (its `started_at` fixes its place in the newest-first listing)."""
        main, pointer = run_to_entities(tenant_id, run)
        check_entity(main)

        async def work(client: TableClient) -> None:
            old = await self._get(client, pointer["PartitionKey"], pointer["RowKey"])
            await self._submit_transaction(client, [("upsert", main, _REPLACE), ("upsert", pointer, _REPLACE)])
            old_row = old.get("run_row") if old is not None else None
            if old_row and old_row != main["RowKey"]:
                await client.delete_entity(main["PartitionKey"], old_row)

        await self._op(RUNS, "storing a run", work)

    async def get_run(self, tenant_id: str, run_id: str) -> dict[str, Any]:
        """The run document; NotFound when there is none."""
        pk = _tenant_pk(tenant_id)
        pointer_rk = _RUN_INDEX + safe_key(run_id, what="run id")

        async def work(client: TableClient) -> dict[str, Any]:
            pointer = await self._get(client, pk, pointer_rk)
            entity = await self._get(client, pk, pointer["run_row"]) if pointer is not None else None
            if entity is None:
                raise NotFound(f"run {run_id!r} not found")
            return run_from_entity(entity)

        return await self._op(RUNS, "reading a run", work)

    async def list_runs(self, tenant_id: str, limit: int = 20,
                        page_token: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Runs newest first, `limit` per page; the second value is the next page's token or None."""
        _check_limit(limit)
        after = _after(decode_page_token(RUNS, page_token)) if page_token else None
        query = "PartitionKey eq @pk and RowKey lt @end"
        params: dict[str, Any] = {"pk": _tenant_pk(tenant_id), "end": _RUN_ROWS_END}
        if after is not None:
            query += " and RowKey gt @after"
            params["after"] = after

        async def work(client: TableClient) -> list[TableEntity]:
            rows: list[TableEntity] = []
            async for entity in client.query_entities(query, parameters=params,
                                                      results_per_page=min(limit + 1, MAX_PAGE)):
                rows.append(entity)
                if len(rows) > limit:
                    break
            return rows

        rows = await self._op(RUNS, "listing runs", work)
        token = encode_page_token(RUNS, {"after": rows[limit - 1]["RowKey"]}) if len(rows) > limit else None
        return [run_from_entity(e) for e in rows[:limit]], token

    # --- plans -------------------------------------------------------------------------------------
    async def put_plan(self, tenant_id: str, plan_id: str, plan: Mapping[str, Any], state_hash: str) -> str:
        """Store a new plan (plans are immutable: an existing id raises ConcurrencyError); returns its ETag."""
        entity = plan_to_entity(tenant_id, plan_id, plan, state_hash, self._now())
        check_entity(entity)

        async def work(client: TableClient) -> str:
            try:
                return _etag(await client.create_entity(entity))
            except ResourceExistsError:
                raise ConcurrencyError(f"plan {plan_id!r} already exists") from None

        return await self._op(PLANS, "storing a plan", work)

    async def get_plan(self, tenant_id: str, plan_id: str) -> dict[str, Any]:
        """`{id, plan, state_hash, created_at, applied, applied_at?, applied_run_id?, etag}`; NotFound if absent."""
        pk, rk = _tenant_pk(tenant_id), safe_key(plan_id, what="plan id")

        async def work(client: TableClient) -> dict[str, Any]:
            entity = await self._get(client, pk, rk)
            if entity is None:
                raise NotFound(f"plan {plan_id!r} not found")
            return plan_from_entity(entity)

        return await self._op(PLANS, "reading a plan", work)

    async def mark_plan_applied(self, tenant_id: str, plan_id: str, etag: str, *,
                                run_id: str | None = None) -> str:
        """Set `applied`/`applied_at` if the plan still has `etag` (ConcurrencyError otherwise); new ETag."""
        patch: dict[str, Any] = {"PartitionKey": _tenant_pk(tenant_id), "RowKey": safe_key(plan_id, what="plan id"),
                                 **encode_document({"applied": True, "applied_at": self._now(),
                                                    "applied_run_id": run_id})}

        async def work(client: TableClient) -> str:
            return await _update_if_unchanged(client, patch, etag, UpdateMode.MERGE,
                                              NotFound(f"plan {plan_id!r} not found"))

        return await self._op(PLANS, "marking a plan applied", work)

    # --- flags -------------------------------------------------------------------------------------
    def _flag_keys(self, tenant_id: str, user_id: str) -> tuple[str, str]:
        if not isinstance(user_id, str) or not user_id:
            raise InputError("user id must be a non-empty string")
        return (bucket_partition(tenant_id, bucket_of(user_id, self.flag_buckets)),
                safe_key(user_id, what="user id"))

    async def get_flag(self, tenant_id: str, user_id: str) -> dict[str, Any] | None:
        """The user's flag (with `etag`), or None."""
        pk, rk = self._flag_keys(tenant_id, user_id)

        async def work(client: TableClient) -> dict[str, Any] | None:
            entity = await self._get(client, pk, rk)
            return flag_from_entity(entity) if entity is not None else None

        return await self._op(FLAGS, "reading a flag", work)

    async def create_flags(self, tenant_id: str, flags: Iterable[Mapping[str, Any]], *,
                           only_new: bool = False) -> list[str]:
        """Record UPN-change cases; returns the user ids that got a new case, in input order.

        `only_new=True`: create rows that don't exist yet and touch nothing else; a transaction that
        meets an existing row creates none of its rows (their ids are left out of the answer), so the
        caller can merge those users with what is stored. That is the bulk path's first try: in a
        mass change nearly every flag is new, and no read precedes the write.

        One row per user holds the latest case. Same user and same `newUpn` (case-insensitive) as the
        stored row: no-op, whatever its status, so replays and re-sweeps never duplicate or reopen a
        case. A different `newUpn`: the new case replaces the row and the old one moves to `previous`
        (newest first, at most 5). Defaults: `status` "pending", `detected_at` now. Within one call the
        last flag of a user wins. Transactions of <= 100 per partition; when one fails because a row
        exists, that chunk's rows are read, the missing ones created in one transaction and the
        existing ones handled one by one with their ETag, so one existing row never blocks the others.
        """
        now = self._now()
        docs: dict[str, dict[str, Any]] = {}
        for flag in flags:
            user_id = _require_str(flag, "userId", "a flag")
            doc = {k: v for k, v in flag.items() if k != "etag"}
            doc.setdefault("status", FLAG_STATUS_OPEN)
            doc.setdefault("detectedAt", now)
            doc["created_at"] = doc["updated_at"] = now
            docs.pop(user_id, None)
            docs[user_id] = doc
        entities = [flag_to_entity(tenant_id, d, self.flag_buckets) for d in docs.values()]
        for entity in entities:
            check_entity(entity)

        async def create_batch(chunk: list[Mapping[str, Any]]) -> bool:
            try:
                await self._op(FLAGS, "creating flags",
                               lambda c: self._submit_transaction(c, [("create", e) for e in chunk]))
                return True
            except ConcurrencyError:
                return False

        async def chunk_of(chunk: list[Mapping[str, Any]]) -> list[str]:
            if await create_batch(chunk):
                return [str(e["userId"]) for e in chunk]
            if only_new:
                return []
            # Some rows exist (a replay, a re-sweep): read them all, batch-create the missing ones,
            # and handle existing rows one by one (no-op, or supersede with their ETag).
            log.debug("flag batch of %d hit existing rows; reading them", len(chunk))
            current = await self._gather(self._read_flag(e["PartitionKey"], e["RowKey"]) for e in chunk)
            missing = [e for e, row in zip(chunk, current, strict=True) if row is None]
            made: list[str] = []
            pending: list[tuple[Mapping[str, Any], TableEntity | None]] = list(zip(chunk, current, strict=True))
            if missing and await create_batch(missing):
                made += [str(e["userId"]) for e in missing]
                pending = [(e, row) for e, row in pending if row is not None]
            outcomes = await self._gather(self._create_flag(tenant_id, docs[str(e["userId"])], row)
                                          for e, row in pending)
            made += [str(e["userId"]) for (e, _), ok in zip(pending, outcomes, strict=True) if ok]
            return made

        results = await self._gather(chunk_of(c) for c in chunk_operations(entities))
        created = {uid for ids in results for uid in ids}
        return [uid for uid in docs if uid in created]

    async def _read_flag(self, pk: str, rk: str) -> TableEntity | None:
        return await self._op(FLAGS, "reading a flag", lambda c: self._get(c, pk, rk))

    async def _create_flag(self, tenant_id: str, doc: dict[str, Any], current: TableEntity | None = None) -> bool:
        """One flag with the `create_flags` semantics: True when a new case was written.

        `current` is the row as last read (None: believed absent, so try to create it first).
        """
        entity = flag_to_entity(tenant_id, doc, self.flag_buckets)
        pk, rk = entity["PartitionKey"], entity["RowKey"]

        async def work(client: TableClient) -> bool:
            row = current
            for _ in range(5):
                if row is None:
                    try:
                        await client.create_entity(entity)
                        return True
                    except ResourceExistsError:
                        row = await self._get(client, pk, rk)
                        if row is None:
                            continue  # deleted meanwhile: create again
                if str(row.get("newUpn", "")).lower() == str(doc["newUpn"]).lower():
                    return False
                old = decode_document(row)
                history = old.pop("previous", None) or []
                replacement = flag_to_entity(tenant_id, {**doc, "previous": [old, *history][:MAX_PREVIOUS_CASES]},
                                             self.flag_buckets)
                check_entity(replacement)
                try:
                    await client.update_entity(replacement, mode=UpdateMode.REPLACE, etag=_etag(row),
                                               match_condition=MatchConditions.IfNotModified)
                    return True
                except HttpResponseError as exc:
                    if not (is_conflict(exc) or _entity_missing(exc)):
                        raise
                row = await self._get(client, pk, rk)
            raise ConcurrencyError(f"flag for user {doc['userId']!r} kept changing under us")

        return await self._op(FLAGS, "creating a flag", work)

    async def update_flag(self, tenant_id: str, flag: Mapping[str, Any], etag: str) -> str:
        """Replace a flag if it still has `etag` (ConcurrencyError otherwise, NotFound if gone); new ETag."""
        doc = {k: v for k, v in flag.items() if k != "etag"}
        doc["updated_at"] = self._now()
        entity = flag_to_entity(tenant_id, doc, self.flag_buckets)
        check_entity(entity)

        async def work(client: TableClient) -> str:
            return await _update_if_unchanged(client, entity, etag, UpdateMode.REPLACE,
                                              NotFound(f"flag for user {doc.get('userId')!r} not found"))

        return await self._op(FLAGS, "updating a flag", work)

    async def _merged_flags(self, client: TableClient, tenant_id: str, status: str | None, after: str | None,
                            page_size: int) -> AsyncIterator[TableEntity]:
        """All flags of a tenant in RowKey (encoded user id) order: a k-way merge over the buckets."""
        iterators = []
        for bucket in range(self.flag_buckets):
            query = "PartitionKey eq @pk"
            params: dict[str, Any] = {"pk": bucket_partition(tenant_id, bucket)}
            if after is not None:
                query += " and RowKey gt @after"
                params["after"] = after
            if status is not None:
                query += " and status eq @status"
                params["status"] = status
            iterators.append(client.query_entities(query, parameters=params, results_per_page=page_size).__aiter__())

        async def advance(index: int) -> TableEntity | None:
            try:
                return await iterators[index].__anext__()
            except StopAsyncIteration:
                return None

        heads = await asyncio.gather(*(advance(i) for i in range(len(iterators))))
        heap = [(str(e["RowKey"]), i, e) for i, e in enumerate(heads) if e is not None]
        heapq.heapify(heap)
        while heap:
            _, index, entity = heapq.heappop(heap)
            yield entity
            following = await advance(index)
            if following is not None:
                heapq.heappush(heap, (str(following["RowKey"]), index, following))

    async def list_flags(self, tenant_id: str, status: str | None = None, limit: int = 100,
                         page_token: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Flags ordered by user id across all buckets, optionally of one `status`; stable opaque paging.

        The token holds the last RowKey returned, so rows written meanwhile never shift a page.
        """
        _check_limit(limit)
        after = None
        if page_token:
            state = decode_page_token(FLAGS, page_token)
            if state.get("status") != status:
                raise InputError("page token was issued for another status filter")
            after = _after(state)
        per_bucket = min(MAX_PAGE, max(10, 2 * (limit + 1) // self.flag_buckets + 1))

        async def work(client: TableClient) -> list[TableEntity]:
            rows: list[TableEntity] = []
            async for entity in self._merged_flags(client, tenant_id, status, after, per_bucket):
                rows.append(entity)
                if len(rows) > limit:
                    break
            return rows

        rows = await self._op(FLAGS, "listing flags", work)
        token = None
        if len(rows) > limit:
            token = encode_page_token(FLAGS, {"after": rows[limit - 1]["RowKey"], "status": status})
        return [flag_from_entity(e) for e in rows[:limit]], token

    async def iter_flags(self, tenant_id: str, status: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every flag (optionally of one `status`), ordered by user id, fetched page by page."""
        token: str | None = None
        while True:
            page, token = await self.list_flags(tenant_id, status=status, limit=MAX_PAGE, page_token=token)
            for flag in page:
                yield flag
            if token is None:
                return

    # --- snapshots ---------------------------------------------------------------------------------
    # One row per (bucket, group) holds many users, one property each (`snapshot_property`): reads are
    # one point read per row, writes are MERGEs of the changed users' properties only (no read, no
    # ETag: two writers of the same row touch different properties, or the same one with the same
    # meaning), and the whole table is ~1,000 rows for 100k users, read in one query per partition.
    def _snapshot_keys(self, tenant_id: str, user_id: str) -> tuple[str, str, str]:
        bucket, group = snapshot_row(user_id, self.snapshot_buckets, self.snapshot_groups)
        return bucket_partition(tenant_id, bucket), snapshot_row_key(group), snapshot_property(user_id)

    async def get_snapshots(self, tenant_id: str, user_ids: Iterable[str]) -> dict[str, str]:
        """Last seen UPN per user id (users never seen or deleted are absent); one point read per row."""
        return {uid: upn for uid, (upn, _) in (await self.get_snapshots_seen(tenant_id, user_ids)).items()}

    async def get_snapshots_seen(self, tenant_id: str, user_ids: Iterable[str]
                                 ) -> dict[str, tuple[str, dt.datetime | None]]:
        """`get_snapshots` with, per user, when that UPN was last read from Graph (None: not recorded)."""
        rows: dict[tuple[str, str], dict[str, str]] = {}  # (pk, rk) -> property -> user id
        for user_id in dict.fromkeys(user_ids):
            pk, rk, name = self._snapshot_keys(tenant_id, user_id)
            rows.setdefault((pk, rk), {})[name] = user_id

        async def one(pk: str, rk: str, names: dict[str, str]) -> list[tuple[str, tuple[str, dt.datetime | None]]]:
            select = list(names) if len(names) <= _MAX_SELECT else None

            async def work(client: TableClient) -> dict[str, Any] | None:
                return await fastpath.get(client, pk, rk, select=select)

            entity = await self._op(SNAPSHOTS, "reading snapshots", work) or {}
            return [(uid, split_snapshot(str(entity[name]))) for name, uid in names.items() if entity.get(name)]

        found = await self._gather(one(pk, rk, names) for (pk, rk), names in rows.items())
        return dict(pair for pairs in found for pair in pairs)

    async def _merge_snapshots(self, tenant_id: str, values: Mapping[str, str], action: str) -> None:
        """MERGE `{user id: value}` into the grouped rows: one operation per row, one transaction per
        partition (<= 100 rows each). A row's own users never exceed Table Storage's property limit."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for user_id, value in values.items():
            pk, rk, name = self._snapshot_keys(tenant_id, user_id)
            rows.setdefault((pk, rk), {"PartitionKey": pk, "RowKey": rk})[name] = value
        for entity in rows.values():
            if len(entity) - 2 > MAX_CUSTOM_PROPERTIES:
                raise StateError(f"snapshot row {entity['RowKey']} of {entity['PartitionKey']} would hold "
                                 f"{len(entity) - 2} users; Table Storage allows {MAX_CUSTOM_PROPERTIES} properties")
            check_entity(entity)

        async def chunk_of(chunk: list[Mapping[str, Any]]) -> None:
            try:
                await self._op(SNAPSHOTS, action,
                               lambda c: self._submit_transaction(c, [("upsert", e, _MERGE) for e in chunk]))
            except StateError as exc:
                if "TooManyProperties" in str(exc) or "TooManyProperties" in str(exc.__cause__ or ""):
                    raise StateError(f"a snapshot row is full ({MAX_CUSTOM_PROPERTIES} users): more users than "
                                     f"{self.snapshot_buckets} x {self.snapshot_groups} rows can hold") from exc
                raise

        await self._gather(chunk_of(c) for c in chunk_operations(rows.values()))

    async def put_snapshots(self, tenant_id: str, upns: Mapping[str, str],
                            seen_at: Mapping[str, dt.datetime] | None = None) -> int:
        """Record last seen UPNs (MERGEs into the grouped rows), each with when it was read from Graph
        when `seen_at` has the user; returns how many users were written."""
        for upn in upns.values():
            if not isinstance(upn, str) or not upn:
                raise InputError("a snapshot needs a non-empty UPN")
        seen = seen_at or {}
        values = {uid: snapshot_value(upn, seen.get(uid)) for uid, upn in upns.items()}
        await self._merge_snapshots(tenant_id, values, "writing snapshots")
        return len(upns)

    async def delete_snapshots(self, tenant_id: str, user_ids: Iterable[str]) -> None:
        """Forget users (deleted accounts): their property becomes empty; never-seen users are fine."""
        await self._merge_snapshots(tenant_id, dict.fromkeys(user_ids, ""), "deleting snapshots")

    async def iter_snapshot_rows(self, tenant_id: str) -> AsyncIterator[dict[str, str]]:
        """Every snapshot row of the tenant as `{user id: UPN}` (deleted users left out), one paged
        query per partition; partitions are read one after another."""
        for bucket in range(self.snapshot_buckets):
            for row in await self._snapshot_partition(tenant_id, bucket):
                yield row

    async def _snapshot_partition(self, tenant_id: str, bucket: int, *, raw: bool = False) -> list[dict[str, str]]:
        read = (lambda value: value) if raw else snapshot_upn

        async def work(client: TableClient) -> list[dict[str, str]]:
            rows: list[dict[str, str]] = []
            async for entity in client.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": bucket_partition(tenant_id, bucket)},
                    results_per_page=MAX_PAGE):
                users = {uid: read(value) for name, value in entity.items()
                         if (uid := snapshot_user(name)) is not None and isinstance(value, str)}
                if len(users) > MAX_CUSTOM_PROPERTIES:  # Azurite doesn't enforce the limit; Azure would refuse
                    raise StateError(f"snapshot row {entity.get('RowKey')} holds {len(users)} users; Table "
                                     f"Storage allows {MAX_CUSTOM_PROPERTIES} properties")
                rows.append({uid: upn for uid, upn in users.items() if upn})
            return rows

        return await self._op(SNAPSHOTS, "reading snapshots", work)

    async def load_all_snapshots(self, tenant_id: str, *, raw: bool = False) -> dict[str, str]:
        """The whole snapshot table as `{user id: UPN}`: all partitions in parallel, ~1,000 rows for
        100k users. `raw` keeps each stored value (`snapshot_value`: the UPN and when it was seen), for the
        sweep, which splits only the few it queues."""
        parts = await self._gather(self._snapshot_partition(tenant_id, b, raw=raw)
                                   for b in range(self.snapshot_buckets))
        out: dict[str, str] = {}
        for rows in parts:
            for row in rows:
                out.update(row)
        return out

    async def count_snapshots(self, tenant_id: str) -> int:
        """How many users have a snapshot (deleted users not counted)."""
        parts = await self._gather(self._snapshot_partition(tenant_id, b) for b in range(self.snapshot_buckets))
        return sum(len(row) for rows in parts for row in rows)

    # --- checkpoints and leases ------------------------------------------------------------------
    async def get_checkpoint(self, tenant_id: str, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """`(value, etag)`, or `(None, None)` when the checkpoint was never written."""
        pk, rk = _tenant_pk(tenant_id), safe_key(name, what="checkpoint name")

        async def work(client: TableClient) -> tuple[dict[str, Any] | None, str | None]:
            entity = await self._get(client, pk, rk)
            if entity is None:
                return None, None
            return checkpoint_from_entity(entity), _etag(entity)

        return await self._op(CHECKPOINTS, "reading a checkpoint", work)

    async def put_checkpoint(self, tenant_id: str, name: str, value: Mapping[str, Any],
                             etag: str | None = None) -> str:
        """Write a checkpoint; returns the new ETag.

        `etag=None`: unconditional. `etag=ABSENT` ("absent"): only if it does not exist yet. Any other
        ETag: only if the row still has it. A lost race raises ConcurrencyError.
        """
        entity = checkpoint_to_entity(tenant_id, name, value, self._now())
        check_entity(entity)

        async def work(client: TableClient) -> str:
            if etag is None:
                return _etag(await client.upsert_entity(entity, mode=UpdateMode.REPLACE))
            if etag == ABSENT:
                try:
                    return _etag(await client.create_entity(entity))
                except ResourceExistsError:
                    raise ConcurrencyError(f"checkpoint {name!r} already exists") from None
            return await _update_if_unchanged(client, entity, etag, UpdateMode.REPLACE,
                                              ConcurrencyError(f"checkpoint {name!r} was deleted meanwhile"))

        return await self._op(CHECKPOINTS, "writing a checkpoint", work)

    async def delete_checkpoint(self, tenant_id: str, name: str) -> None:
        """Remove a checkpoint (e.g. a delta link after `syncStateNotFound`); missing is fine."""
        pk, rk = _tenant_pk(tenant_id), safe_key(name, what="checkpoint name")

        async def work(client: TableClient) -> None:
            await client.delete_entity(pk, rk)

        await self._op(CHECKPOINTS, "deleting a checkpoint", work)

    async def acquire_lease(self, tenant_id: str, name: str, owner: str, seconds: float) -> bool:
        """Take (or renew, for the same `owner`) lease `name` for `seconds`; False while another holds it.

        Built on a checkpoint row and its ETag: an expired lease is taken over; of two racing owners
        exactly one wins.
        """
        if not isinstance(owner, str) or not owner:
            raise InputError("lease owner must be a non-empty string")
        if seconds <= 0:
            raise InputError("lease duration must be positive")
        now = self._now()
        entity = lease_to_entity(tenant_id, name, owner, now, seconds)

        async def work(client: TableClient) -> bool:
            for _ in range(3):
                try:
                    await client.create_entity(entity)
                    return True
                except ResourceExistsError:
                    pass
                current = await self._get(client, entity["PartitionKey"], entity["RowKey"])
                if current is None:
                    continue
                expires = plain_value(current.get("expires_at"))
                if current.get("owner") != owner and isinstance(expires, dt.datetime) and expires > now:
                    return False
                if await _replace_if_still(client, entity, current):
                    return True
            return False

        return await self._op(CHECKPOINTS, "acquiring a lease", work)

    async def release_lease(self, tenant_id: str, name: str, owner: str) -> bool:
        """Give up a lease `owner` holds; False when it is not (or no longer) theirs."""
        pk, rk = _tenant_pk(tenant_id), _LEASE + safe_key(name, what="lease name")

        async def work(client: TableClient) -> bool:
            current = await self._get(client, pk, rk)
            if current is None or current.get("owner") != owner:
                return False
            try:
                await client.delete_entity(pk, rk, etag=_etag(current), match_condition=MatchConditions.IfNotModified)
                return True
            except HttpResponseError as exc:
                if is_conflict(exc) or _entity_missing(exc):
                    return False
                raise

        return await self._op(CHECKPOINTS, "releasing a lease", work)

    async def renew_lease(self, tenant_id: str, name: str, owner: str, seconds: float) -> bool:
        """Extend a lease `owner` still holds by `seconds` from now; False when the row is gone or another
        owner has it (unlike `acquire_lease`, a lost lease is never taken back: the caller must stop)."""
        if seconds <= 0:
            raise InputError("lease duration must be positive")
        pk, rk = _tenant_pk(tenant_id), _LEASE + safe_key(name, what="lease name")
        entity = lease_to_entity(tenant_id, name, owner, self._now(), seconds)

        async def work(client: TableClient) -> bool:
            current = await self._get(client, pk, rk)
            if current is None or current.get("owner") != owner:
                return False
            return await _replace_if_still(client, entity, current)

        return await self._op(CHECKPOINTS, "renewing a lease", work)

    # --- events (idempotency keys) -----------------------------------------------------------------
    async def claim_event(self, tenant_id: str, event_id: str, ttl_seconds: float) -> bool:
        """True the first time `event_id` is seen (or after its claim expired); False for a repeat."""
        if ttl_seconds <= 0:
            raise InputError("event ttl must be positive")
        now = self._now()
        entity = event_to_entity(tenant_id, event_id, now, ttl_seconds)

        async def work(client: TableClient) -> bool:
            try:
                await client.create_entity(entity)
                return True
            except ResourceExistsError:
                pass
            current = await self._get(client, entity["PartitionKey"], entity["RowKey"])
            if current is None:
                try:
                    await client.create_entity(entity)
                    return True
                except ResourceExistsError:
                    return False
            expires = plain_value(current.get("expires_at"))
            if isinstance(expires, dt.datetime) and expires > now:
                return False
            return await _replace_if_still(client, entity, current)

        return await self._op(EVENTS, "claiming an event", work)

    async def forget_event(self, tenant_id: str, event_id: str) -> None:
        """Drop a claim (roll back when processing failed, so a retry is not mistaken for a repeat)."""
        pk, rk = _tenant_pk(tenant_id), event_row_key(event_id)

        async def work(client: TableClient) -> None:
            await client.delete_entity(pk, rk)

        await self._op(EVENTS, "forgetting an event", work)

    async def _delete_event_row(self, partition_key: str, row_key: str) -> None:
        """Delete one events row by its keys (missing is fine)."""
        async def work(client: TableClient) -> None:
            await client.delete_entity(partition_key, row_key)

        await self._op(EVENTS, "purging events", work)

    async def purge_events(self, tenant_id: str) -> int:
        """Delete expired claims (Table Storage has no TTL); returns how many were removed."""
        now = self._now()
        pk = _tenant_pk(tenant_id)

        async def expired(client: TableClient) -> list[dict[str, Any]]:
            return [{"PartitionKey": pk, "RowKey": e["RowKey"]} async for e in client.query_entities(
                "PartitionKey eq @pk and expires_at le @now", parameters={"pk": pk, "now": now},
                select=["RowKey"], results_per_page=MAX_PAGE)]

        rows = await self._op(EVENTS, "listing expired events", expired)

        async def chunk_of(chunk: list[Mapping[str, Any]]) -> None:
            try:
                await self._op(EVENTS, "purging events",
                               lambda c: self._submit_transaction(c, [("delete", e) for e in chunk]))
            except (StateError, NotFound):  # e.g. one row went meanwhile: delete the rest one by one
                for entity in chunk:
                    await self._delete_event_row(pk, str(entity["RowKey"]))

        await self._gather(chunk_of(c) for c in chunk_operations(rows))
        return len(rows)


def _after(state: Mapping[str, Any]) -> str:
    after = state.get("after")
    if not isinstance(after, str) or not after:
        raise InputError("page token is malformed")
    return after


def _check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InputError(f"limit must be between 1 and {MAX_PAGE}")
