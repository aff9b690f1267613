"""The `runs` table: one row per run, newest first, and a pointer row from each run id to its row.

| PartitionKey | RowKey                           | holds                          |
|--------------|----------------------------------|--------------------------------|
| tenant       | inverted µs timestamp `_` run id | the run document               |
| tenant       | `id|` run id                     | pointer: run id -> run RowKey  |
| tenant       | `dt|` run id                     | the slow lane's passkey reads  |

The `dt|` row holds, per instance `i` of the slow lane, `r_<i>` (users read for that run) and `f_<i>`/`l_<i>`
(its first and last read, ISO 8601). Each instance MERGEs its own properties (no read, no ETag: instances never
touch each other's); it is a row apart from the run's, which the run's recorder REPLACEs.
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
    MERGE,
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
_DETAILS = "dt" + SEPARATOR
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

    async def count_details(self, run_id: str, instance: str, read: int, first: dt.datetime, last: dt.datetime) -> None:
        """Record that this `instance` of the slow lane has read `read` users' passkeys for `run_id` so far,
        between `first` and `last` (its own properties of the run's `dt|` row, MERGEd)."""
        row = {"PartitionKey": tenant_pk(self.tenant_id), "RowKey": _DETAILS + safe_key(run_id, what="run id"),
               f"r_{instance}": read, f"f_{instance}": first.isoformat(), f"l_{instance}": last.isoformat()}

        async def work(client: TableClient) -> None:
            await client.upsert_entity(row, **MERGE)

        await self._tables.op(RUNS, "counting passkey reads", work)

    async def details(self, run_id: str) -> dict[str, Any] | None:
        """The slow lane's passkey reads for `run_id`, summed over instances: `{read, firstAt, lastAt}` (aware
        datetimes); None when none were counted."""
        async def work(client: TableClient) -> TableEntity | None:
            return await get_entity(client, tenant_pk(self.tenant_id), _DETAILS + safe_key(run_id, what="run id"))

        entity = await self._tables.op(RUNS, "reading passkey reads", work)
        if entity is None:
            return None
        reads = {k[2:]: int(v) for k, v in entity.items() if k.startswith("r_")}
        firsts = [dt.datetime.fromisoformat(str(entity[f"f_{i}"])) for i in reads if f"f_{i}" in entity]
        lasts = [dt.datetime.fromisoformat(str(entity[f"l_{i}"])) for i in reads if f"l_{i}" in entity]
        if not reads or not firsts or not lasts:
            return None
        return {"read": sum(reads.values()), "firstAt": min(firsts), "lastAt": max(lasts)}

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
