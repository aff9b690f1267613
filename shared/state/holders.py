"""The `holders` table: the users Graph's registration report lists with a passkey (the holders index).

The same grouped rows as `snapshots` (and the same code, `SnapshotTable` on this table): PartitionKey
`tenant|bNN`, RowKey `gNNN`, one property per user (`snapshot_property`) holding `"1"` for a holder; an empty
value means not (or no longer) a holder, since a MERGE cannot remove a property. Beside them one meta row
(PartitionKey the tenant id, RowKey `meta`): when Graph refreshed the report that was read
(`reportRefreshedAt`), when it was read (`readAt`), and how many holders it listed (`count`).

`replace` writes the meta row last: a crash half-way keeps the old meta, so the next refresh sees an index
older than the report and reads it again.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from azure.data.tables.aio import TableClient

from shared.errors import StateError
from shared.state.snapshots import SnapshotTable
from shared.state.tables import HOLDERS, REPLACE, Layout, Tables, get_entity, tenant_pk

META_ROW = "meta"
HOLDER = "1"


@dataclass(frozen=True)
class HolderMeta:
    """What the index was built from: the report's refresh time (None: the report listed nobody), when it
    was read, and how many holders it has."""

    report_refreshed_at: dt.datetime | None
    read_at: dt.datetime
    count: int


def _aware(value: Any, name: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise StateError(f"the holders meta row has no {name}")
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def meta_from_entity(entity: dict[str, Any]) -> HolderMeta:
    refreshed = entity.get("reportRefreshedAt")
    count = entity.get("count")
    if not isinstance(count, int) or isinstance(count, bool):
        raise StateError("the holders meta row has no count")
    return HolderMeta(report_refreshed_at=None if refreshed is None else _aware(refreshed, "reportRefreshedAt"),
                      read_at=_aware(entity.get("readAt"), "readAt"), count=count)


class HolderIndex:
    """One tenant's passkey holders: point reads of some users, the whole set, the meta row, and `replace`."""

    def __init__(self, tables: Tables, tenant_id: str, layout: Layout | None = None) -> None:
        self._tables = tables
        self.tenant_id = tenant_id
        self._rows = SnapshotTable(tables, tenant_id, layout, table=HOLDERS)

    async def get(self, user_ids: Iterable[str]) -> set[str]:
        """Which of these users are holders (ids as given); one point read per grouped row."""
        wanted = {uid: uid.lower() for uid in user_ids}
        found = await self._rows.get(set(wanted.values()))
        return {uid for uid, key in wanted.items() if key in found}

    async def load_all(self) -> set[str]:
        """Every holder of the index (all partitions in parallel)."""
        return set(await self._rows.load_all(raw=True))

    async def compact(self) -> int:
        """Reclaim the emptied properties of users no longer holders (`SnapshotTable.compact`)."""
        return await self._rows.compact()

    async def meta(self) -> HolderMeta | None:
        """What the index was built from; None when it never was."""
        pk = tenant_pk(self.tenant_id)

        async def work(client: TableClient) -> dict[str, Any] | None:
            entity = await get_entity(client, pk, META_ROW)
            return None if entity is None else dict(entity)

        entity = await self._tables.op(HOLDERS, "reading the holders meta row", work)
        return None if entity is None else meta_from_entity(entity)

    async def replace(self, ids: Iterable[str], *, report_refreshed_at: dt.datetime | None,
                      read_at: dt.datetime) -> dict[str, int]:
        """Make the index hold exactly `ids`: MERGE the new holders as "1" and the former ones as "", then the
        meta row. Returns {"added", "removed", "count"}."""
        wanted = {uid.lower() for uid in ids}
        current = await self.load_all()
        added, removed = wanted - current, current - wanted
        if added:
            await self._rows.put(dict.fromkeys(added, HOLDER))
        if removed:
            await self._rows.delete(removed)
        await self._write_meta(report_refreshed_at, read_at, len(wanted))
        return {"added": len(added), "removed": len(removed), "count": len(wanted)}

    async def _write_meta(self, refreshed: dt.datetime | None, read_at: dt.datetime, count: int) -> None:
        """The meta row, replaced whole (a refresh time of None leaves no older one behind)."""
        entity: dict[str, Any] = {"PartitionKey": tenant_pk(self.tenant_id), "RowKey": META_ROW,
                                  "readAt": read_at, "count": count}
        if refreshed is not None:
            entity["reportRefreshedAt"] = refreshed

        async def work(client: TableClient) -> None:
            await client.upsert_entity(entity, **REPLACE)

        await self._tables.op(HOLDERS, "writing the holders meta row", work)
