"""The shared table plumbing: transactions of at most 100 operations in one partition."""
from __future__ import annotations

from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from shared.errors import StateError
from shared.state import MAX_BATCH_OPERATIONS, StateStore
from shared.state.snapshots import snapshot_row
from shared.state.tables import CHECKPOINTS, create_or_take_over
from tests.state.conftest import make_flag


def flag(user_id: str, new_upn: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"userId": user_id, "oldUpn": f"{user_id}@old.example", "newUpn": new_upn or f"{user_id}@new.example",
            **extra}


async def test_transactions_never_exceed_100_operations(store: StateStore, tenant: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With one bucket, 250 flags and 250 snapshots go out as transactions of at most 100, and all land."""
    store.flag_buckets = store.snapshot_buckets = 1
    sizes: list[int] = []
    real = store._tables.submit_transaction

    async def spy(client: TableClient, operations: list[tuple[Any, ...]]) -> None:
        sizes.append(len(operations))
        await real(client, operations)

    monkeypatch.setattr(store._tables, "submit_transaction", spy)
    assert len(await store.create_flags(tenant, [make_flag(f"u{i}") for i in range(250)])) == 250
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
        await store._tables.submit_transaction(Recorder(), ops)  # type: ignore[arg-type]
    with pytest.raises(StateError):
        await store._tables.submit_transaction(Recorder(), [ops[0], ("create", {"PartitionKey": "q", "RowKey": "r"})])  # type: ignore[arg-type]
    await store._tables.submit_transaction(Recorder(), [])  # type: ignore[arg-type]
    await store._tables.submit_transaction(Recorder(), ops[:100])  # type: ignore[arg-type]
    assert calls == [100]


async def test_create_or_take_over_creates_refuses_or_replaces(store: StateStore, tenant: str) -> None:
    """The one create-or-take-over loop (leases, event claims): a missing row is created; an existing one is
    replaced only when `take_over` gives a replacement, and left alone (False) when it gives None."""
    await store.ensure()
    client = await store._clients.table(CHECKPOINTS)
    first = {"PartitionKey": tenant, "RowKey": "row", "owner": "a"}
    second = {**first, "owner": "b"}
    assert await create_or_take_over(client, first, lambda current: None) is True
    assert await create_or_take_over(client, second, lambda current: None) is False
    assert (await client.get_entity(tenant, "row"))["owner"] == "a"
    seen: list[str] = []

    def take(current: Any) -> dict[str, Any]:
        seen.append(current["owner"])
        return second

    assert await create_or_take_over(client, second, take) is True
    assert seen == ["a"] and (await client.get_entity(tenant, "row"))["owner"] == "b"
