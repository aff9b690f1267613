"""StateStore against a real (private, in-memory) Azurite: every repository method, ETags, batching."""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import random
import socket
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from azure.data.tables.aio import TableClient

from devhost.azurite import Azurite
from shared.config import StorageSettings
from shared.errors import ConcurrencyError, InputError, NotFound, PayloadTooLarge, StateError
from shared.state import ABSENT, MAX_BATCH_OPERATIONS, TABLES, StateStore, fastpath
from shared.state.codec import MAX_CUSTOM_PROPERTIES
from shared.state.store import snapshot_property, snapshot_row, snapshot_user

if TYPE_CHECKING:
    from conftest import FakeClock

WEIRD_IDS = ["a/b", "c#d", "e?f", "g\\h", "tab\tid", "ü/ñ", "p|q", "~x"]


def flag(user_id: str, new_upn: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"userId": user_id, "oldUpn": f"{user_id}@old.example", "newUpn": new_upn or f"{user_id}@new.example",
            **extra}


def run(run_id: str, started: dt.datetime, **extra: Any) -> dict[str, Any]:
    return {"id": run_id, "started_at": started, "trigger": "timer", "mode": "audit", **extra}


# --- plumbing --------------------------------------------------------------------------------------
async def test_ensure_creates_all_tables_and_is_idempotent(store: StateStore, azurite: Azurite) -> None:
    """ensure() creates the six tables and the queue, and running it again (or from a 2nd store) is harmless."""
    await store.ensure()
    await store.ensure(force=True)
    again = StateStore(StorageSettings(connection_string=azurite.connection_string), retry_total=0)
    try:
        await again.ensure()
        service = await again._clients.table_service()
        names = {t.name async for t in service.list_tables()}
        assert set(TABLES) <= names
        assert await again.queue.peek_count() >= 0
    finally:
        await again.close()


async def test_ping_reports_up_and_down(store: StateStore) -> None:
    """ping() is True against Azurite and False (without raising) against a port nobody listens on."""
    assert await store.ping() is True
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"
        dead = StateStore(StorageSettings(connection_string=(
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            f"TableEndpoint={endpoint};QueueEndpoint={endpoint};")), retry_total=0)
        try:
            assert await dead.ping(within=3) is False
        finally:
            await dead.close()


# --- runs ------------------------------------------------------------------------------------------
async def test_runs_round_trip_and_list_newest_first_with_paging(store: StateStore, tenant: str) -> None:
    """Runs come back equal, listed newest first, and pages chain until the token is None."""
    base = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    runs = [run(f"run-{i}", base + dt.timedelta(minutes=i), graph_calls=i, result={"ok": i % 2 == 0})
            for i in range(7)]
    for r in runs:
        await store.put_run(tenant, r)
    assert await store.get_run(tenant, "run-3") == runs[3]
    seen: list[str] = []
    token = None
    while True:
        page, token = await store.list_runs(tenant, limit=3, page_token=token)
        seen += [r["id"] for r in page]
        if token is None:
            break
    assert seen == [f"run-{i}" for i in reversed(range(7))]


async def test_run_update_replaces_the_row(store: StateStore, tenant: str) -> None:
    """Putting a run again replaces it; a changed started_at moves it without leaving a duplicate."""
    start = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    await store.put_run(tenant, run("r1", start, status="running"))
    await store.put_run(tenant, run("r1", start, status="done", after={"x": 1}))
    await store.put_run(tenant, run("r1", start + dt.timedelta(seconds=5), status="done"))
    page, token = await store.list_runs(tenant)
    assert [(r["id"], r["status"]) for r in page] == [("r1", "done")] and token is None
    assert (await store.get_run(tenant, "r1"))["started_at"] == start + dt.timedelta(seconds=5)


async def test_big_run_payload_round_trips(store: StateStore, tenant: str) -> None:
    """A run whose plan and snapshots exceed 64 KiB (incompressible) is stored and read back intact."""
    r = run("big", dt.datetime.now(dt.UTC), plan={"blob": base64.b64encode(os.urandom(150_000)).decode()},
            before={"users": [f"user-{i}@contoso.com" for i in range(5000)]}, after={"n": 2**40})
    await store.put_run(tenant, r)
    assert await store.get_run(tenant, "big") == r
    page, _ = await store.list_runs(tenant)
    assert page == [r]


async def test_run_over_one_mib_is_refused_before_sending(store: StateStore, tenant: str) -> None:
    """An entity over 1 MiB raises PayloadTooLarge and nothing is written (Azurite would accept it)."""
    blob = {f"k{i}": base64.b64encode(os.urandom(30_000)).decode() for i in range(40)}
    with pytest.raises(PayloadTooLarge):
        await store.put_run(tenant, run("huge", dt.datetime.now(dt.UTC), plan=blob))
    with pytest.raises(NotFound):
        await store.get_run(tenant, "huge")


async def test_get_run_missing_is_not_found(store: StateStore, tenant: str) -> None:
    """An unknown run id raises NotFound; a run without started_at is refused as bad input."""
    with pytest.raises(NotFound):
        await store.get_run(tenant, "nope")
    with pytest.raises(InputError):
        await store.put_run(tenant, {"id": "x"})


# --- plans -----------------------------------------------------------------------------------------
async def test_plans_store_read_and_mark_applied_with_etag(store: StateStore, tenant: str) -> None:
    """A plan round-trips; marking it applied needs the current ETag; a stale one gets ConcurrencyError."""
    plan = {"changes": [{"op": "set", "path": "/state", "value": "enabled"}]}
    await store.put_plan(tenant, "p1", plan, "sha256:abc")
    got = await store.get_plan(tenant, "p1")
    assert (got["plan"], got["state_hash"], got["applied"]) == (plan, "sha256:abc", False)
    new_etag = await store.mark_plan_applied(tenant, "p1", got["etag"], run_id="run-9")
    applied = await store.get_plan(tenant, "p1")
    assert applied["applied"] is True and applied["applied_run_id"] == "run-9" and applied["etag"] == new_etag
    with pytest.raises(ConcurrencyError):
        await store.mark_plan_applied(tenant, "p1", got["etag"])


async def test_plan_ids_are_unique_and_missing_plans_not_found(store: StateStore, tenant: str) -> None:
    """Storing the same plan id twice is a ConcurrencyError; unknown plans raise NotFound."""
    await store.put_plan(tenant, "p/1", {"a": 1}, "h")
    with pytest.raises(ConcurrencyError):
        await store.put_plan(tenant, "p/1", {"a": 2}, "h")
    assert (await store.get_plan(tenant, "p/1"))["plan"] == {"a": 1}
    with pytest.raises(NotFound):
        await store.get_plan(tenant, "missing")
    with pytest.raises(NotFound):
        await store.mark_plan_applied(tenant, "missing", "W/\"datetime'2025-01-01T00%3A00%3A00Z'\"")


# --- flags -----------------------------------------------------------------------------------------
async def test_250_flags_land_exactly_once_and_recreating_is_a_no_op(store: StateStore, tenant: str) -> None:
    """250 flags spread over the buckets are all created once; creating them again changes nothing."""
    flags = [flag(f"user-{i:03d}") for i in range(250)]
    created = await store.create_flags(tenant, flags)
    assert created == [f["userId"] for f in flags]
    stored = [f async for f in store.iter_flags(tenant)]
    assert sorted(f["userId"] for f in stored) == sorted(created)
    etags = {f["userId"]: f["etag"] for f in stored}
    assert await store.create_flags(tenant, flags) == []
    again = [f async for f in store.iter_flags(tenant)]
    assert {f["userId"]: f["etag"] for f in again} == etags


async def test_batch_conflict_falls_back_so_other_flags_still_land(store: StateStore, tenant: str) -> None:
    """Existing rows in a batch don't fail the others: new users land, a same-UPN row is untouched, and a
    changed-UPN row is superseded."""
    store.flag_buckets = 1  # one partition, so the existing rows share a transaction with the others
    await store.create_flags(tenant, [flag("user-000", status="resolved"), flag("user-001", "before@x.example")])
    before = await store.get_flag(tenant, "user-000")
    batch = [flag(f"user-{i:03d}") for i in range(60)]
    created = await store.create_flags(tenant, batch)
    assert created == [f"user-{i:03d}" for i in range(1, 60)]
    after = await store.get_flag(tenant, "user-000")
    assert after is not None and before is not None
    assert after["etag"] == before["etag"] and after["status"] == "resolved"
    superseded = await store.get_flag(tenant, "user-001")
    assert superseded is not None and superseded["newUpn"] == "user-001@new.example"
    assert [p["newUpn"] for p in superseded["previous"]] == ["before@x.example"]
    assert len([f async for f in store.iter_flags(tenant)]) == 60


async def test_a_new_upn_supersedes_the_case_and_keeps_history(store: StateStore, tenant: str) -> None:
    """A change to a different UPN replaces the row and moves the old case into `previous`."""
    await store.create_flags(tenant, [flag("u1", "first@new.example")])
    assert await store.create_flags(tenant, [flag("u1", "FIRST@new.example")]) == []
    assert await store.create_flags(tenant, [flag("u1", "second@new.example")]) == ["u1"]
    current = await store.get_flag(tenant, "u1")
    assert current is not None
    assert current["newUpn"] == "second@new.example" and current["status"] == "pending"
    assert [p["newUpn"] for p in current["previous"]] == ["first@new.example"]


async def test_last_flag_of_a_user_wins_within_one_call(store: StateStore, tenant: str) -> None:
    """Two flags for one user in one call make one row, the later one (no duplicate-key batch error)."""
    created = await store.create_flags(tenant, [flag("dup", "a@x.example"), flag("other"), flag("dup", "b@x.example")])
    assert sorted(created) == ["dup", "other"]
    stored = await store.get_flag(tenant, "dup")
    assert stored is not None and stored["newUpn"] == "b@x.example"


async def test_update_flag_etag_conflict_between_two_writers(store: StateStore, other_store: StateStore,
                                                             tenant: str) -> None:
    """Two writers holding the same ETag: the first update wins, the second gets ConcurrencyError."""
    await store.create_flags(tenant, [flag("u1")])
    mine = await store.get_flag(tenant, "u1")
    theirs = await other_store.get_flag(tenant, "u1")
    assert mine is not None and theirs is not None
    await other_store.update_flag(tenant, {**theirs, "status": "notified"}, theirs["etag"])
    with pytest.raises(ConcurrencyError):
        await store.update_flag(tenant, {**mine, "status": "resolved"}, mine["etag"])
    final = await store.get_flag(tenant, "u1")
    assert final is not None and final["status"] == "notified"
    new_etag = await store.update_flag(tenant, {**final, "status": "resolved"}, final["etag"])
    assert (await store.get_flag(tenant, "u1") or {})["etag"] == new_etag
    with pytest.raises(NotFound):
        await store.update_flag(tenant, flag("ghost"), new_etag)


async def test_list_flags_pages_with_status_filter(store: StateStore, tenant: str) -> None:
    """Paging open flags 10 at a time returns exactly the open ones, in user-id order, each once."""
    await store.create_flags(tenant, [flag(f"user-{i:02d}") for i in range(60)])
    for i in range(0, 60, 3):
        current = await store.get_flag(tenant, f"user-{i:02d}")
        assert current is not None
        await store.update_flag(tenant, {**current, "status": "resolved"}, current["etag"])
    expected_open = [f"user-{i:02d}" for i in range(60) if i % 3]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page, token = await store.list_flags(tenant, status="pending", limit=10, page_token=token)
        assert all(f["status"] == "pending" for f in page) and len(page) <= 10
        seen += [f["userId"] for f in page]
        pages += 1
        if token is None:
            break
    assert seen == expected_open and pages == 4
    resolved, _ = await store.list_flags(tenant, status="resolved", limit=100)
    assert [f["userId"] for f in resolved] == [f"user-{i:02d}" for i in range(0, 60, 3)]
    _, first_token = await store.list_flags(tenant, status="pending", limit=5)
    with pytest.raises(InputError):
        await store.list_flags(tenant, status="resolved", page_token=first_token)
    with pytest.raises(InputError):
        await store.list_flags(tenant, page_token="not-a-token")
    with pytest.raises(InputError):
        await store.list_flags(tenant, limit=0)


async def test_row_key_encoding_of_forbidden_characters(store: StateStore, tenant: str) -> None:
    """User, run, plan and checkpoint ids with / # ? \\ and controls are stored and listed verbatim."""
    created = await store.create_flags(tenant, [flag(u) for u in WEIRD_IDS])
    assert created == WEIRD_IDS
    for user_id in WEIRD_IDS:
        got = await store.get_flag(tenant, user_id)
        assert got is not None and got["userId"] == user_id
    listed = [f["userId"] async for f in store.iter_flags(tenant)]
    assert sorted(listed) == sorted(WEIRD_IDS)
    await store.put_run(tenant, run("r/1#?\\", dt.datetime.now(dt.UTC)))
    assert (await store.get_run(tenant, "r/1#?\\"))["id"] == "r/1#?\\"
    await store.put_checkpoint(tenant, "delta/users#1", {"link": "https://graph/?$deltatoken=a#b"})
    value, _ = await store.get_checkpoint(tenant, "delta/users#1")
    assert value == {"link": "https://graph/?$deltatoken=a#b"}
    await store.put_snapshots(tenant, {u: f"{abs(hash(u))}@x.example" for u in WEIRD_IDS})
    assert set(await store.get_snapshots(tenant, WEIRD_IDS)) == set(WEIRD_IDS)


async def test_transactions_never_exceed_100_operations(store: StateStore, tenant: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With one bucket, 250 flags and 250 snapshots go out as transactions of at most 100, and all land."""
    store.flag_buckets = store.snapshot_buckets = 1
    sizes: list[int] = []
    real = store._submit_transaction

    async def spy(client: TableClient, operations: list[tuple[Any, ...]]) -> None:
        sizes.append(len(operations))
        await real(client, operations)

    monkeypatch.setattr(store, "_submit_transaction", spy)
    assert len(await store.create_flags(tenant, [flag(f"u{i}") for i in range(250)])) == 250
    assert sorted(sizes) == [50, 100, 100]
    sizes.clear()
    store.snapshot_groups = 1000  # ~220 distinct snapshot rows in the one partition: one MERGE per row
    rows = {snapshot_row(f"u{i}", 1, 1000) for i in range(250)}
    assert len(rows) > 200
    assert await store.put_snapshots(tenant, {f"u{i}": f"u{i}@x.example" for i in range(250)}) == 250
    assert len(sizes) == 3 and max(sizes) == 100 and sum(sizes) == len(rows)
    assert await store.count_snapshots(tenant) == 250
    assert len([f async for f in store.iter_flags(tenant)]) == 250


async def test_submit_transaction_refuses_over_100_and_empty(store: StateStore) -> None:
    """The guard never sends 101 operations or a mixed-partition batch, and sends nothing for an empty one."""
    calls: list[int] = []

    class Recorder:
        async def submit_transaction(self, operations: list[Any]) -> None:
            calls.append(len(operations))

    ops = [("create", {"PartitionKey": "p", "RowKey": f"r{i}"}) for i in range(MAX_BATCH_OPERATIONS + 1)]
    with pytest.raises(StateError):
        await store._submit_transaction(Recorder(), ops)  # type: ignore[arg-type]
    with pytest.raises(StateError):
        await store._submit_transaction(Recorder(), [ops[0], ("create", {"PartitionKey": "q", "RowKey": "r"})])  # type: ignore[arg-type]
    await store._submit_transaction(Recorder(), [])  # type: ignore[arg-type]
    await store._submit_transaction(Recorder(), ops[:100])  # type: ignore[arg-type]
    assert calls == [100]


# --- snapshots -------------------------------------------------------------------------------------
async def test_snapshots_put_get_count_and_delete(store: StateStore, tenant: str) -> None:
    """Snapshots upsert in batches, read 20 at a time (unknown ids absent), count, update and delete."""
    upns = {f"user-{i}": f"user-{i}@contoso.com" for i in range(250)}
    assert await store.put_snapshots(tenant, upns) == 250
    assert await store.count_snapshots(tenant) == 250
    wanted = [f"user-{i}" for i in range(0, 200, 10)] + ["never-seen", "also-unknown"]
    got = await store.get_snapshots(tenant, wanted)
    assert got == {u: upns[u] for u in wanted if u in upns}
    await store.put_snapshots(tenant, {"user-0": "renamed@fabrikam.com"})
    assert (await store.get_snapshots(tenant, ["user-0"])) == {"user-0": "renamed@fabrikam.com"}
    await store.delete_snapshots(tenant, ["user-0", "user-1", "never-seen"])
    assert await store.count_snapshots(tenant) == 248
    assert await store.get_snapshots(tenant, []) == {}


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
    assert await store.put_snapshots(tenant, users) == 301
    rows = await _raw_snapshot_rows(azurite, tenant)
    assert len(rows) == 8
    assert {r["PartitionKey"] for r in rows} == {f"{tenant}|b00", f"{tenant}|b01"}
    assert {r["RowKey"] for r in rows} == {"g000", "g001", "g002", "g003"}
    props = {k: v for r in rows for k, v in r.items() if k not in ("PartitionKey", "RowKey")}
    assert len(props) == 301
    some = next(iter(users))
    assert props["u" + some.replace("-", "")] == users[some]
    assert props["x" + "Not-A-Guid/ü".encode().hex()] == "odd@contoso.com"
    assert await store.load_all_snapshots(tenant) == users
    merged: dict[str, str] = {}
    async for row in store.iter_snapshot_rows(tenant):
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
        assert await store.get_snapshots(tenant, wanted) == {u: users[u] for u in wanted}
    assert len(reads) == len(set(reads)) <= 8


async def test_concurrent_merges_into_one_row_all_land(store: StateStore, tenant: str) -> None:
    """Many writers merging different users into the same row at once: every user lands (MERGE is
    per property, no read, no ETag), and a later merge of one user leaves the others alone."""
    store.snapshot_buckets, store.snapshot_groups = 1, 1
    users = {f"user-{i}": f"user-{i}@contoso.com" for i in range(40)}
    await asyncio.gather(*(store.put_snapshots(tenant, {u: upn}) for u, upn in users.items()))
    assert await store.load_all_snapshots(tenant) == users
    await asyncio.gather(store.put_snapshots(tenant, {"user-0": "a@contoso.com"}),
                         store.put_snapshots(tenant, {"user-1": "b@contoso.com"}))
    assert await store.load_all_snapshots(tenant) == {**users, "user-0": "a@contoso.com", "user-1": "b@contoso.com"}


async def test_deleted_users_leave_the_grouped_row(store: StateStore, tenant: str) -> None:
    """A deleted user is absent from reads, counts and the full load; the row's other users stay; the
    same id can come back."""
    store.snapshot_buckets, store.snapshot_groups = 1, 1
    users = {f"user-{i}": f"user-{i}@contoso.com" for i in range(5)}
    await store.put_snapshots(tenant, users)
    await store.delete_snapshots(tenant, ["user-0", "never-seen"])
    assert await store.get_snapshots(tenant, ["user-0", "user-1", "never-seen"]) == {"user-1": users["user-1"]}
    assert await store.count_snapshots(tenant) == 4
    assert "user-0" not in await store.load_all_snapshots(tenant)
    await store.put_snapshots(tenant, {"user-0": "back@contoso.com"})
    assert (await store.get_snapshots(tenant, ["user-0"])) == {"user-0": "back@contoso.com"}
    assert await store.count_snapshots(tenant) == 5


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
        await store.put_snapshots(tenant, {f"user-{i}": "a@contoso.com" for i in range(MAX_CUSTOM_PROPERTIES + 1)})
    assert await store.count_snapshots(tenant) == 0
    await store.put_snapshots(tenant, {f"user-{i}": "a@contoso.com" for i in range(MAX_CUSTOM_PROPERTIES)})
    await store.put_snapshots(tenant, {"one-too-many": "a@contoso.com"})
    with pytest.raises(StateError, match="252"):
        await store.load_all_snapshots(tenant)


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


# --- checkpoints and leases -----------------------------------------------------------------------
async def test_checkpoint_etags_absent_sentinel_and_conflicts(store: StateStore, other_store: StateStore,
                                                              tenant: str) -> None:
    """Create-only with ABSENT, If-Match with an ETag, unconditional with None; losers get ConcurrencyError."""
    assert await store.get_checkpoint(tenant, "delta") == (None, None)
    etag = await store.put_checkpoint(tenant, "delta", {"link": "d1"}, etag=ABSENT)
    with pytest.raises(ConcurrencyError):
        await other_store.put_checkpoint(tenant, "delta", {"link": "other"}, etag=ABSENT)
    value, read_etag = await other_store.get_checkpoint(tenant, "delta")
    assert value == {"link": "d1"} and read_etag == etag
    etag2 = await store.put_checkpoint(tenant, "delta", {"link": "d2"}, etag=etag)
    with pytest.raises(ConcurrencyError):
        await other_store.put_checkpoint(tenant, "delta", {"link": "stale"}, etag=etag)
    assert await store.get_checkpoint(tenant, "delta") == ({"link": "d2"}, etag2)
    await store.put_checkpoint(tenant, "delta", {"link": "forced"})
    assert (await store.get_checkpoint(tenant, "delta"))[0] == {"link": "forced"}
    await store.delete_checkpoint(tenant, "delta")
    with pytest.raises(ConcurrencyError):
        await store.put_checkpoint(tenant, "delta", {"link": "x"}, etag=etag2)


async def test_lease_refuses_second_owner_until_expiry(store: StateStore, tenant: str, clock: FakeClock) -> None:
    """A held lease refuses others, can be renewed by its owner, and is taken over once expired."""
    assert await store.acquire_lease(tenant, "sweep", "worker-a", 60) is True
    assert await store.acquire_lease(tenant, "sweep", "worker-b", 60) is False
    clock.advance(30)
    assert await store.acquire_lease(tenant, "sweep", "worker-a", 60) is True  # renewal, now until +90
    clock.advance(45)
    assert await store.acquire_lease(tenant, "sweep", "worker-b", 60) is False
    clock.advance(20)
    assert await store.acquire_lease(tenant, "sweep", "worker-b", 60) is True
    assert await store.release_lease(tenant, "sweep", "worker-a") is False
    assert await store.acquire_lease(tenant, "sweep", "worker-a", 60) is False
    assert await store.release_lease(tenant, "sweep", "worker-b") is True
    assert await store.acquire_lease(tenant, "sweep", "worker-a", 60) is True
    assert await store.get_checkpoint(tenant, "sweep") == (None, None)  # leases don't shadow checkpoints


async def test_racing_lease_acquirers_get_exactly_one_winner(store: StateStore, other_store: StateStore,
                                                             tenant: str, clock: FakeClock) -> None:
    """Five owners racing for a free (then an expired) lease: exactly one wins each time."""
    results = await asyncio.gather(*(s.acquire_lease(tenant, "policy", f"w{i}", 10)
                                     for i, s in enumerate([store, other_store] * 3)))
    assert sum(results) == 1
    clock.advance(11)
    results = await asyncio.gather(*(s.acquire_lease(tenant, "policy", f"late{i}", 10)
                                     for i, s in enumerate([store, other_store] * 3)))
    assert sum(results) == 1


# --- events ----------------------------------------------------------------------------------------
async def test_claim_event_once_then_false_until_expired_or_forgotten(store: StateStore, tenant: str,
                                                                      clock: FakeClock) -> None:
    """The first claim is True, a repeat False; after expiry or forget_event it can be claimed again."""
    assert await store.claim_event(tenant, "notif/1#a", 300) is True
    assert await store.claim_event(tenant, "notif/1#a", 300) is False
    clock.advance(301)
    assert await store.claim_event(tenant, "notif/1#a", 300) is True
    await store.forget_event(tenant, "notif/1#a")
    assert await store.claim_event(tenant, "notif/1#a", 300) is True
    long_id = "ticket-" + "x" * 1000
    assert await store.claim_event(tenant, long_id, 300) is True
    assert await store.claim_event(tenant, long_id, 300) is False


async def test_concurrent_claims_have_one_winner(store: StateStore, other_store: StateStore, tenant: str) -> None:
    """Eight simultaneous claims of one event id (two processes): exactly one is True."""
    results = await asyncio.gather(*(s.claim_event(tenant, "evt-1", 60) for s in [store, other_store] * 4))
    assert sum(results) == 1


async def test_purge_events_removes_only_expired(store: StateStore, tenant: str, clock: FakeClock) -> None:
    """purge_events deletes expired claims and keeps live ones."""
    for i in range(5):
        assert await store.claim_event(tenant, f"old-{i}", 10)
    clock.advance(20)
    assert await store.claim_event(tenant, "fresh", 60)
    assert await store.purge_events(tenant) == 5
    assert await store.claim_event(tenant, "fresh", 60) is False
    assert await store.claim_event(tenant, "old-0", 60) is True
