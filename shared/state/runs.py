"""The `runs` table: one row per run, newest first, and a pointer row from each run id to its row.

| PartitionKey | RowKey                           | holds                          |
|--------------|----------------------------------|--------------------------------|
| tenant       | inverted µs timestamp `_` run id | the run document               |
| tenant       | `id|` run id                     | pointer: run id -> run RowKey  |
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from azure.data.tables import TableEntity
from azure.data.tables.aio import TableClient

from shared.errors import InputError, NotFound
from shared.state.codec import check_entity, decode_document, encode_document
from shared.state.keys import SEPARATOR, decode_page_token, encode_page_token, inverted_time, safe_key
from shared.state.tables import (
    MAX_PAGE,
    REPLACE,
    RUNS,
    Tables,
    check_limit,
    get_entity,
    page_after,
    require_str,
    tenant_pk,
)

_RUN_INDEX = "id" + SEPARATOR
_RUN_ROWS_END = ":"  # run rows start with digits, pointer rows with "id|"


def run_to_entities(tenant_id: str, run: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run row and its pointer row. `run` needs `id` (str) and `started_at` (aware datetime)."""
    run_id = require_str(run, "id", "a run")
    started = run.get("started_at")
    if not isinstance(started, dt.datetime) or started.tzinfo is None:
        raise InputError("a run needs 'started_at' as a timezone-aware datetime")
    pk = tenant_pk(tenant_id)
    row = f"{inverted_time(started)}_{safe_key(run_id, what='run id')}"
    main = {"PartitionKey": pk, "RowKey": row, **encode_document(run)}
    pointer = {"PartitionKey": pk, "RowKey": _RUN_INDEX + safe_key(run_id, what="run id"), "run_row": row}
    return main, pointer


def run_from_entity(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The run document."""
    return decode_document(entity)


class RunTable:
    """Runs of one tenant: store, read by id, list newest first."""

    def __init__(self, tables: Tables, tenant_id: str) -> None:
        self._tables = tables
        self.tenant_id = tenant_id

    async def put(self, run: Mapping[str, Any]) -> None:
        """Create or replace a run (its `started_at` fixes its place in the newest-first listing)."""
        main, pointer = run_to_entities(self.tenant_id, run)
        check_entity(main)

        async def work(client: TableClient) -> None:
            old = await get_entity(client, pointer["PartitionKey"], pointer["RowKey"])
            await self._tables.submit_transaction(client, [("upsert", main, REPLACE), ("upsert", pointer, REPLACE)])
            old_row = old.get("run_row") if old is not None else None
            if old_row and old_row != main["RowKey"]:
                await client.delete_entity(main["PartitionKey"], old_row)

        await self._tables.op(RUNS, "storing a run", work)

    async def get(self, run_id: str) -> dict[str, Any]:
        """The run document; NotFound when there is none."""
        pk = tenant_pk(self.tenant_id)
        pointer_rk = _RUN_INDEX + safe_key(run_id, what="run id")

        async def work(client: TableClient) -> dict[str, Any]:
            pointer = await get_entity(client, pk, pointer_rk)
            entity = await get_entity(client, pk, pointer["run_row"]) if pointer is not None else None
            if entity is None:
                raise NotFound(f"run {run_id!r} not found")
            return run_from_entity(entity)

        return await self._tables.op(RUNS, "reading a run", work)

    async def page(self, limit: int = 20,
                   page_token: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """Runs newest first, `limit` per page; the second value is the next page's token or None."""
        check_limit(limit)
        after = page_after(decode_page_token(RUNS, page_token)) if page_token else None
        query = "PartitionKey eq @pk and RowKey lt @end"
        params: dict[str, Any] = {"pk": tenant_pk(self.tenant_id), "end": _RUN_ROWS_END}
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

        rows = await self._tables.op(RUNS, "listing runs", work)
        token = encode_page_token(RUNS, {"after": rows[limit - 1]["RowKey"]}) if len(rows) > limit else None
        return [run_from_entity(e) for e in rows[:limit]], token
