"""The `events` table: idempotency keys (tickets, notifications, queued jobs) with an expiry.

PartitionKey the tenant, RowKey the event id (`h|` + its sha256 when it is too long or unstorable).
Table Storage has no TTL: `purge` deletes expired claims.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from typing import Any

from azure.data.tables import TableEntity
from azure.data.tables.aio import TableClient

from shared.errors import InputError, NotFound, StateError
from shared.state.codec import chunk_operations, encode_document, plain_value
from shared.state.keys import SEPARATOR, safe_key
from shared.state.tables import EVENTS, MAX_PAGE, Tables, create_or_take_over, tenant_pk

_HASHED_EVENT = "h" + SEPARATOR


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
    return {"PartitionKey": tenant_pk(tenant_id), "RowKey": event_row_key(event_id),
            **encode_document({"claimed_at": now, "expires_at": now + dt.timedelta(seconds=ttl_seconds)})}


class EventTable:
    """Idempotency keys of one tenant: claim, forget, purge the expired."""

    def __init__(self, tables: Tables, tenant_id: str) -> None:
        self._tables = tables
        self.tenant_id = tenant_id

    async def claim(self, event_id: str, ttl_seconds: float) -> bool:
        """True the first time `event_id` is seen (or after its claim expired); False for a repeat."""
        if ttl_seconds <= 0:
            raise InputError("event ttl must be positive")
        now = self._tables.now()
        entity = event_to_entity(self.tenant_id, event_id, now, ttl_seconds)

        def expired(current: TableEntity) -> dict[str, Any] | None:
            expires = plain_value(current.get("expires_at"))
            return None if isinstance(expires, dt.datetime) and expires > now else entity

        async def work(client: TableClient) -> bool:
            return await create_or_take_over(client, entity, expired) is True

        return await self._tables.op(EVENTS, "claiming an event", work)

    async def forget(self, event_id: str) -> None:
        """Drop a claim (roll back when processing failed, so a retry is not mistaken for a repeat)."""
        await self._delete_row(tenant_pk(self.tenant_id), event_row_key(event_id), "forgetting an event")

    async def _delete_row(self, partition_key: str, row_key: str, action: str) -> None:
        """Delete one events row by its keys (missing is fine)."""
        async def work(client: TableClient) -> None:
            await client.delete_entity(partition_key, row_key)

        await self._tables.op(EVENTS, action, work)

    async def purge(self) -> int:
        """Delete expired claims (Table Storage has no TTL); returns how many were removed."""
        now = self._tables.now()
        pk = tenant_pk(self.tenant_id)

        async def expired(client: TableClient) -> list[dict[str, Any]]:
            return [{"PartitionKey": pk, "RowKey": e["RowKey"]} async for e in client.query_entities(
                "PartitionKey eq @pk and expires_at le @now", parameters={"pk": pk, "now": now},
                select=["RowKey"], results_per_page=MAX_PAGE)]

        rows = await self._tables.op(EVENTS, "listing expired events", expired)

        async def chunk_of(chunk: list[Mapping[str, Any]]) -> None:
            try:
                await self._tables.transaction(EVENTS, "purging events", [("delete", e) for e in chunk])
            except (StateError, NotFound):  # e.g. one row went meanwhile: delete the rest one by one
                for entity in chunk:
                    await self._delete_row(pk, str(entity["RowKey"]), "purging events")

        await self._tables.gather(chunk_of(c) for c in chunk_operations(rows))
        return len(rows)
