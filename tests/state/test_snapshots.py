"""The snapshots table against Azurite: grouped rows, MERGE writes, property names, the row limit."""
from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from devhost.azurite import Azurite
from shared.errors import InputError, StateError
from shared.state import StateStore, fastpath
from shared.state.codec import MAX_CUSTOM_PROPERTIES
from shared.state.snapshots import snapshot_property, snapshot_row, snapshot_user, snapshot_value, split_snapshot

SEEN = dt.datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=dt.UTC)
WEIRD_IDS = ["a/b", "c#d", "e?f", "g\\h", "tab\tid", "ü/ñ", "p|q", "~x"]


async def test_snapshots_put_get_count_and_delete(store: StateStore, tenant: str) -> None:
    """Snapshots upsert in batches, read 20 at a time (unknown ids absent), count, update and delete."""
    upns = {f"user-{i}": f"user-{i}@contoso.com" for i in range(250)}
    assert await store.snapshots.put(upns) == 250
    assert await store.snapshots.count() == 250
    wanted = [f"user-{i}" for i in range(0, 200, 10)] + ["never-seen", "also-unknown"]
    got = await store.snapshots.get(wanted)
    assert got == {u: upns[u] for u in wanted if u in upns}
    await store.snapshots.put({"user-0": "renamed@fabrikam.com"})
    assert (await store.snapshots.get(["user-0"])) == {"user-0": "renamed@fabrikam.com"}
    await store.snapshots.delete(["user-0", "user-1", "never-seen"])
    assert await store.snapshots.count() == 248
    assert await store.snapshots.get([]) == {}


async def _raw_snapshot_rows(azurite: Azurite, tenant: str) -> list[dict[str, Any]]:
    async with TableClient.from_connection_string(azurite.connection_string, "snapshots") as client:
        return [dict(e) async for e in client.query_entities("PartitionKey ge @lo and PartitionKey lt @hi",
                                                              parameters={"lo": tenant, "hi": tenant + "~"})]


async def test_snapshot_rows_hold_many_users(store: StateStore, tenant: str, azurite: Azurite) -> None:
    """Snapshots are grouped: `tenant|bNN` / `gNNN` rows with one `u`+hex property per GUID user; the
    whole table reads back in one pass, and get_snapshots reads one row per group."""
    store.snapshot_buckets, store.snapshot_groups = 2, 4
    users = {str(uuid.UUID(int=n, version=4)): f"user{n}@contoso.com" for n in range(300)}
    users["Not-A-Guid/ü"] = "odd@contoso.com"
    assert await store.snapshots.put(users) == 301
    rows = await _raw_snapshot_rows(azurite, tenant)
    assert len(rows) == 8
    assert {r["PartitionKey"] for r in rows} == {f"{tenant}|b00", f"{tenant}|b01"}
    assert {r["RowKey"] for r in rows} == {"g000", "g001", "g002", "g003"}
    props = {k: v for r in rows for k, v in r.items() if k not in ("PartitionKey", "RowKey")}
    assert len(props) == 301
    some = next(iter(users))
    assert props["u" + some.replace("-", "")] == users[some]
    assert props["x" + "Not-A-Guid/ü".encode().hex()] == "odd@contoso.com"
    assert await store.snapshots.load_all() == users
    merged: dict[str, str] = {}
    async for row in store.snapshots.rows():
        merged.update(row)
    assert merged == users
    reads: list[str] = []
    real = fastpath.get

    async def spy(client: Any, pk: str, rk: str, select: Any = None) -> Any:
        reads.append(pk + rk)
        return await real(client, pk, rk, select=select)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastpath, "get", spy)
        wanted = list(users)[:40]
        assert await store.snapshots.get(wanted) == {u: users[u] for u in wanted}
    assert len(reads) == len(set(reads)) <= 8


async def test_concurrent_merges_into_one_row_all_land(store: StateStore, tenant: str) -> None:
    """Many writers merging different users into the same row at once: every user lands (MERGE is
    per property, no read, no ETag), and a later merge of one user leaves the others alone."""
    store.snapshot_buckets, store.snapshot_groups = 1, 1
    users = {f"user-{i}": f"user-{i}@contoso.com" for i in range(40)}
    await asyncio.gather(*(store.snapshots.put({u: upn}) for u, upn in users.items()))
    assert await store.snapshots.load_all() == users
    await asyncio.gather(store.snapshots.put({"user-0": "a@contoso.com"}),
                         store.snapshots.put({"user-1": "b@contoso.com"}))
    assert await store.snapshots.load_all() == {**users, "user-0": "a@contoso.com", "user-1": "b@contoso.com"}


async def test_deleted_users_leave_the_grouped_row(store: StateStore, tenant: str) -> None:
    """A deleted user is absent from reads, counts and the full load; the row's other users stay; the
    same id can come back."""
    store.snapshot_buckets, store.snapshot_groups = 1, 1
    users = {f"user-{i}": f"user-{i}@contoso.com" for i in range(5)}
    await store.snapshots.put(users)
    await store.snapshots.delete(["user-0", "never-seen"])
    assert await store.snapshots.get(["user-0", "user-1", "never-seen"]) == {"user-1": users["user-1"]}
    assert await store.snapshots.count() == 4
    assert "user-0" not in await store.snapshots.load_all()
    await store.snapshots.put({"user-0": "back@contoso.com"})
    assert (await store.snapshots.get(["user-0"])) == {"user-0": "back@contoso.com"}
    assert await store.snapshots.count() == 5


async def test_snapshot_rows_never_exceed_the_property_limit(store: StateStore, tenant: str) -> None:
    """At 100k users the default 16 x 64 rows hold at most ~140 users each (limit 252); a write that
    would put more than 252 users into one row is refused before anything is sent, and a row that
    grew past the limit anyway (Azurite doesn't enforce it) is reported on read, not half-read."""
    rng = random.Random(7)
    per_row: dict[tuple[int, int], int] = {}
    for _ in range(100_000):
        key = snapshot_row(str(uuid.UUID(int=rng.getrandbits(128), version=4)), store.snapshot_buckets,
                           store.snapshot_groups)
        per_row[key] = per_row.get(key, 0) + 1
    assert len(per_row) == 16 * 64
    assert max(per_row.values()) <= 160 < MAX_CUSTOM_PROPERTIES
    store.snapshot_buckets, store.snapshot_groups = 1, 1
    with pytest.raises(StateError, match="252"):
        await store.snapshots.put({f"user-{i}": "a@contoso.com" for i in range(MAX_CUSTOM_PROPERTIES + 1)})
    assert await store.snapshots.count() == 0
    await store.snapshots.put({f"user-{i}": "a@contoso.com" for i in range(MAX_CUSTOM_PROPERTIES)})
    await store.snapshots.put({"one-too-many": "a@contoso.com"})
    with pytest.raises(StateError, match="252"):
        await store.snapshots.load_all()


def test_snapshot_property_names_are_valid_and_reversible() -> None:
    """GUIDs become `u` + 32 hex digits, anything else `x` + hex of UTF-8 (valid identifiers); ids too
    long for a 255-character name are refused."""
    guid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert snapshot_property(guid) == "u0f8fad5bd9cb469fa16570867728950e"
    for user_id in [guid, guid.upper(), "user-0", *WEIRD_IDS, "x" * 127]:
        name = snapshot_property(user_id)
        assert name[0] in "ux" and name.isalnum() and len(name) <= 255
        assert snapshot_user(name) == user_id
    with pytest.raises(InputError):
        snapshot_property("x" * 128)
    with pytest.raises(InputError):
        snapshot_property("")




async def test_a_snapshot_keeps_its_seen_time_and_readers_still_get_the_upn(store: StateStore, tenant: str) -> None:
    """put with a time -> get_snapshots_seen has it; get_snapshots and load_all_snapshots return the bare UPN."""
    await store.snapshots.put({"u-1": "a@contoso.example", "u-2": "b@contoso.example"}, {"u-1": SEEN})
    assert await store.snapshots.get_seen(["u-1", "u-2", "u-3"]) == {
        "u-1": ("a@contoso.example", SEEN), "u-2": ("b@contoso.example", None)}
    assert await store.snapshots.get(["u-1", "u-2"]) == {"u-1": "a@contoso.example", "u-2": "b@contoso.example"}
    assert await store.snapshots.load_all() == {"u-1": "a@contoso.example", "u-2": "b@contoso.example"}
    await store.snapshots.put({"u-1": "a2@contoso.example"})  # a write without a time forgets the old one
    assert await store.snapshots.get_seen(["u-1"]) == {"u-1": ("a2@contoso.example", None)}


def test_a_value_without_a_recognisable_time_is_all_upn() -> None:
    """Values written before the time was kept, or anything odd after a space, read as a UPN with no time."""
    assert split_snapshot(snapshot_value("a@b.example", SEEN)) == ("a@b.example", SEEN)
    assert split_snapshot("a@b.example") == ("a@b.example", None)
    assert split_snapshot("odd name@b.example") == ("odd name@b.example", None)
