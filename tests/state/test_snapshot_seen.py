"""Snapshots keep when each UPN was read from Graph, beside the UPN, without changing what UPN readers see."""
from __future__ import annotations

import datetime as dt

from shared.state.store import StateStore, snapshot_value, split_snapshot

SEEN = dt.datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=dt.UTC)


async def test_a_snapshot_keeps_its_seen_time_and_readers_still_get_the_upn(store: StateStore, tenant: str) -> None:
    """put with a time -> get_snapshots_seen has it; get_snapshots and load_all_snapshots return the bare UPN."""
    await store.put_snapshots(tenant, {"u-1": "a@contoso.example", "u-2": "b@contoso.example"}, {"u-1": SEEN})
    assert await store.get_snapshots_seen(tenant, ["u-1", "u-2", "u-3"]) == {
        "u-1": ("a@contoso.example", SEEN), "u-2": ("b@contoso.example", None)}
    assert await store.get_snapshots(tenant, ["u-1", "u-2"]) == {"u-1": "a@contoso.example", "u-2": "b@contoso.example"}
    assert await store.load_all_snapshots(tenant) == {"u-1": "a@contoso.example", "u-2": "b@contoso.example"}
    await store.put_snapshots(tenant, {"u-1": "a2@contoso.example"})  # a write without a time forgets the old one
    assert await store.get_snapshots_seen(tenant, ["u-1"]) == {"u-1": ("a2@contoso.example", None)}


def test_a_value_without_a_recognisable_time_is_all_upn() -> None:
    """Values written before the time was kept, or anything odd after a space, read as a UPN with no time."""
    assert split_snapshot(snapshot_value("a@b.example", SEEN)) == ("a@b.example", SEEN)
    assert split_snapshot("a@b.example") == ("a@b.example", None)
    assert split_snapshot("odd name@b.example") == ("odd name@b.example", None)
