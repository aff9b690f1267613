"""The holders table against Azurite: grouped rows like the snapshots' ("1" a holder, "" no longer), point reads
of some users, the whole set, and `replace` (adds, removes, the meta row written last)."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from devhost.azurite import Azurite
from shared.errors import StateError
from shared.state import StateStore
from shared.state.holders import HolderMeta
from shared.state.snapshots import snapshot_property

REFRESHED = dt.datetime(2026, 3, 1, 4, 0, 0, 123456, tzinfo=dt.UTC)
READ = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC)


def ids(n: int, start: int = 0) -> set[str]:
    return {str(uuid.UUID(int=i, version=4)) for i in range(start, start + n)}


async def _raw_rows(azurite: Azurite, tenant: str) -> list[dict[str, Any]]:
    async with TableClient.from_connection_string(azurite.connection_string, "holders") as client:
        return [dict(e) async for e in client.query_entities("PartitionKey ge @lo and PartitionKey lt @hi",
                                                              parameters={"lo": tenant, "hi": tenant + "~"})]


async def test_an_index_never_built_has_no_meta_and_no_holders(store: StateStore) -> None:
    assert await store.holders.meta() is None
    assert await store.holders.load_all() == set()
    assert await store.holders.get(ids(3)) == set()


async def test_replace_adds_and_removes_holders_then_writes_the_meta(store: StateStore, tenant: str,
                                                                     azurite: Azurite) -> None:
    """A first replace adds every holder; a second adds the new ones and empties the former ones' properties;
    `get` answers for some users (case-insensitively), `load_all` for all; the meta row says what was read."""
    store.snapshot_buckets, store.snapshot_groups = 2, 4
    first = ids(150)
    assert await store.holders.replace(first, report_refreshed_at=REFRESHED, read_at=READ) == \
        {"added": 150, "removed": 0, "count": 150}
    assert await store.holders.load_all() == first
    assert await store.holders.meta() == HolderMeta(report_refreshed_at=REFRESHED, read_at=READ, count=150)

    second = ids(100, start=100)  # 100-149 stay, 0-99 go, 150-199 come
    later = READ + dt.timedelta(days=1)
    assert await store.holders.replace({i.upper() for i in second}, report_refreshed_at=REFRESHED + dt.timedelta(
        days=1), read_at=later) == {"added": 50, "removed": 100, "count": 100}
    assert await store.holders.load_all() == second
    some = sorted(ids(5, start=98))  # 98, 99 removed; 100-102 holders
    assert await store.holders.get([*some, some[3].upper(), "not-a-user"]) == {*some[2:], some[3].upper()}
    meta = await store.holders.meta()
    assert meta is not None and meta.count == 100 and meta.read_at == later

    rows = await _raw_rows(azurite, tenant)
    grouped = [r for r in rows if r["RowKey"] != "meta"]
    assert {r["PartitionKey"] for r in grouped} == {f"{tenant}|b00", f"{tenant}|b01"}
    assert {r["RowKey"] for r in grouped} <= {"g000", "g001", "g002", "g003"}
    values = {k: v for r in grouped for k, v in r.items() if k not in ("PartitionKey", "RowKey")}
    assert values[snapshot_property(min(second))] == "1"
    assert values[snapshot_property(str(uuid.UUID(int=0, version=4)))] == ""  # removed: emptied
    (meta_row,) = [r for r in rows if r["RowKey"] == "meta"]
    assert meta_row["PartitionKey"] == tenant and meta_row["count"] == 100


async def test_the_meta_row_is_written_last(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replace that fails half-way (the removals) keeps the old meta row, so the next refresh sees an index
    older than the report and replaces it again; that one completes."""
    await store.holders.replace(ids(10), report_refreshed_at=REFRESHED, read_at=READ)
    rows = store.holders._rows

    async def fail(user_ids: Any) -> None:
        raise StateError("storage went away")

    monkeypatch.setattr(rows, "delete", fail)
    with pytest.raises(StateError):
        await store.holders.replace(ids(10, start=5), report_refreshed_at=REFRESHED + dt.timedelta(days=1),
                                    read_at=READ + dt.timedelta(days=1))
    assert await store.holders.meta() == HolderMeta(report_refreshed_at=REFRESHED, read_at=READ, count=10)
    assert await store.holders.load_all() == ids(15)  # the additions landed, the removals did not
    monkeypatch.undo()
    counts = await store.holders.replace(ids(10, start=5), report_refreshed_at=REFRESHED + dt.timedelta(days=1),
                                         read_at=READ + dt.timedelta(days=1))
    assert counts == {"added": 0, "removed": 5, "count": 10}
    assert await store.holders.load_all() == ids(10, start=5)


async def test_an_empty_report_keeps_no_refresh_time(store: StateStore) -> None:
    """A report listing nobody has no refresh time: the meta row holds none, not the previous one."""
    await store.holders.replace(ids(3), report_refreshed_at=REFRESHED, read_at=READ)
    assert await store.holders.replace(set(), report_refreshed_at=None, read_at=READ) == \
        {"added": 0, "removed": 3, "count": 0}
    assert await store.holders.meta() == HolderMeta(report_refreshed_at=None, read_at=READ, count=0)
    assert await store.holders.load_all() == set()
