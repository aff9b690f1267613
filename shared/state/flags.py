"""The `flags` table: one row per user holding that user's latest UPN-change case.

Rows hold a `shared.upn.flag.Flag` in its JSON shape (`flag_to_dict`) and come back as `StoredFlag`
records (the flag, its ETag, the row's times). The table persists and enforces ETags; it never decides
what a flag becomes: a create that meets an existing row writes nothing (the caller merges with
`shared.upn.decide.merge_flag` and updates under the ETag it read).

PartitionKey `tenant|bNN` (`crc32(user id) % FLAG_BUCKETS`, the snapshot's bucket too), RowKey the user
id. Listing merges the buckets in user-id order (a k-way merge), so pages are stable across buckets.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient

from shared.errors import ConcurrencyError, InputError, NotFound
from shared.state.codec import check_entity, chunk_operations, decode_document, encode_document
from shared.state.keys import bucket_of, bucket_partition, decode_page_token, encode_page_token, safe_key
from shared.state.tables import (
    FLAGS,
    MAX_PAGE,
    Layout,
    Tables,
    check_limit,
    etag_of,
    get_entity,
    page_after,
    update_if_unchanged,
)
from shared.upn.flag import Flag, flag_from_dict, flag_to_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredFlag:
    """A flag as the table holds it: the record, the ETag to update it under, and when its row was
    created and last written (None for rows written before those were kept)."""

    flag: Flag
    etag: str
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


def flag_to_entity(tenant_id: str, flag: Flag, buckets: int, *, created_at: dt.datetime | None = None,
                   updated_at: dt.datetime | None = None) -> dict[str, Any]:
    """A flag row: the flag's JSON fields (`flag_to_dict`) and the row's bookkeeping times."""
    doc: dict[str, Any] = {**flag_to_dict(flag), "created_at": created_at, "updated_at": updated_at}
    return {"PartitionKey": bucket_partition(tenant_id, bucket_of(flag.user_id, buckets)),
            "RowKey": safe_key(flag.user_id, what="user id"), **encode_document(doc)}


def flag_from_entity(entity: TableEntity) -> StoredFlag:
    """The stored flag (InputError naming the field when the row is malformed)."""
    doc = decode_document(entity)
    created, updated = doc.get("created_at"), doc.get("updated_at")
    return StoredFlag(flag_from_dict(doc), etag_of(entity),
                      created if isinstance(created, dt.datetime) else None,
                      updated if isinstance(updated, dt.datetime) else None)


class FlagTable:
    """The flags of one tenant: read, create, update with the ETag read, list across buckets."""

    def __init__(self, tables: Tables, tenant_id: str, layout: Layout | None = None) -> None:
        self._tables = tables
        self.tenant_id = tenant_id
        self.layout = layout or Layout()

    @property
    def buckets(self) -> int:
        return self.layout.flag_buckets

    def _keys(self, user_id: str) -> tuple[str, str]:
        if not isinstance(user_id, str) or not user_id:
            raise InputError("user id must be a non-empty string")
        return bucket_partition(self.tenant_id, bucket_of(user_id, self.buckets)), safe_key(user_id, what="user id")

    async def get(self, user_id: str) -> StoredFlag | None:
        """The user's flag, or None."""
        pk, rk = self._keys(user_id)
        entity = await self._read(pk, rk)
        return flag_from_entity(entity) if entity is not None else None

    async def _read(self, pk: str, rk: str) -> TableEntity | None:
        return await self._tables.op(FLAGS, "reading a flag", lambda c: get_entity(c, pk, rk))

    async def create(self, flags: Iterable[Flag]) -> list[str]:
        """Create a row for each flag whose user has none yet; returns those user ids, in input order.

        An existing row is never touched: what a flag becomes is `shared.upn.decide.merge_flag`'s
        decision, so the caller reads the stored flag, merges, and writes with `update` under its ETag.
        Within one call the last flag of a user wins. Transactions of <= 100 per partition and no read
        first (in a mass change nearly every flag is new); a transaction that meets an existing row is
        retried row by row, so one existing row never blocks the others.
        """
        now = self._tables.now()
        latest = {flag.user_id: flag for flag in flags}
        entities = [flag_to_entity(self.tenant_id, f, self.buckets, created_at=now, updated_at=now)
                    for f in latest.values()]
        for entity in entities:
            check_entity(entity)

        async def chunk_of(chunk: list[Mapping[str, Any]]) -> list[str]:
            if await self._create_batch(chunk):
                return [str(e["userId"]) for e in chunk]
            log.debug("flag batch of %d hit existing rows; creating one by one", len(chunk))
            made = await self._tables.gather(self._create_one(e) for e in chunk)
            return [str(e["userId"]) for e, ok in zip(chunk, made, strict=True) if ok]

        results = await self._tables.gather(chunk_of(c) for c in chunk_operations(entities))
        created = {uid for ids in results for uid in ids}
        return [uid for uid in latest if uid in created]

    async def _create_batch(self, chunk: list[Mapping[str, Any]]) -> bool:
        """One transaction creating every row of `chunk`; False when one of them exists."""
        try:
            await self._tables.transaction(FLAGS, "creating flags", [("create", e) for e in chunk])
            return True
        except ConcurrencyError:
            return False

    async def _create_one(self, entity: Mapping[str, Any]) -> bool:
        """Create one flag row; False when the user already has one."""
        async def work(client: TableClient) -> bool:
            try:
                await client.create_entity(entity)
                return True
            except ResourceExistsError:
                return False

        return await self._tables.op(FLAGS, "creating a flag", work)

    async def update(self, flag: Flag, etag: str, *, created_at: dt.datetime | None = None) -> str:
        """Replace a flag if it still has `etag` (ConcurrencyError otherwise, NotFound if gone); new ETag.
        `created_at`: the row's creation time to keep (a `StoredFlag`'s), else it is not recorded."""
        entity = flag_to_entity(self.tenant_id, flag, self.buckets, created_at=created_at,
                                updated_at=self._tables.now())
        check_entity(entity)

        async def work(client: TableClient) -> str:
            return await update_if_unchanged(client, entity, etag, UpdateMode.REPLACE,
                                             NotFound(f"flag for user {flag.user_id!r} not found"))

        return await self._tables.op(FLAGS, "updating a flag", work)

    async def _merged(self, client: TableClient, status: str | None, after: str | None,
                      page_size: int) -> AsyncIterator[TableEntity]:
        """All flags of a tenant in RowKey (encoded user id) order: a k-way merge over the buckets."""
        iterators = []
        for bucket in range(self.buckets):
            query = "PartitionKey eq @pk"
            params: dict[str, Any] = {"pk": bucket_partition(self.tenant_id, bucket)}
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

    async def page(self, status: str | None = None, limit: int = 100,
                   page_token: str | None = None) -> tuple[list[StoredFlag], str | None]:
        """Flags ordered by user id across all buckets, optionally of one `status`; stable opaque paging.

        The token holds the last RowKey returned, so rows written meanwhile never shift a page.
        """
        check_limit(limit)
        after = None
        if page_token:
            state = decode_page_token(FLAGS, page_token)
            if state.get("status") != status:
                raise InputError("page token was issued for another status filter")
            after = page_after(state)
        per_bucket = min(MAX_PAGE, max(10, 2 * (limit + 1) // self.buckets + 1))

        async def work(client: TableClient) -> list[TableEntity]:
            rows: list[TableEntity] = []
            async for entity in self._merged(client, status, after, per_bucket):
                rows.append(entity)
                if len(rows) > limit:
                    break
            return rows

        rows = await self._tables.op(FLAGS, "listing flags", work)
        token = None
        if len(rows) > limit:
            token = encode_page_token(FLAGS, {"after": rows[limit - 1]["RowKey"], "status": status})
        return [flag_from_entity(e) for e in rows[:limit]], token

    async def every(self, status: str | None = None) -> AsyncIterator[StoredFlag]:
        """Every flag (optionally of one `status`), ordered by user id, fetched page by page."""
        token: str | None = None
        while True:
            page, token = await self.page(status=status, limit=MAX_PAGE, page_token=token)
            for flag in page:
                yield flag
            if token is None:
                return
