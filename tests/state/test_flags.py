"""The flags table against Azurite: typed records in and out, batched creates that never touch an existing
row, ETag updates, paging across buckets."""
from __future__ import annotations

import dataclasses

import pytest

from shared.errors import ConcurrencyError, InputError, NotFound
from shared.state import StateStore
from shared.upn.flag import FlagStatus
from tests.state.conftest import FakeClock, make_flag

RESOLVED = FlagStatus.RESOLVED


async def test_250_flags_land_exactly_once_and_recreating_is_a_no_op(store: StateStore, tenant: str) -> None:
    """250 flags spread over the buckets are all created once; creating them again changes nothing."""
    flags = [make_flag(f"user-{i:03d}") for i in range(250)]
    created = await store.create_flags(tenant, flags)
    assert created == [f.user_id for f in flags]
    stored = [f async for f in store.iter_flags(tenant)]
    assert sorted(f.flag.user_id for f in stored) == sorted(created)
    assert {f.flag.user_id: f.flag for f in stored} == {f.user_id: f for f in flags}
    etags = {f.flag.user_id: f.etag for f in stored}
    assert await store.create_flags(tenant, flags) == []
    again = [f async for f in store.iter_flags(tenant)]
    assert {f.flag.user_id: f.etag for f in again} == etags


async def test_batch_conflict_falls_back_so_other_flags_still_land(store: StateStore, tenant: str) -> None:
    """Existing rows in a batch don't fail the others: new users land, and existing rows, with the same
    or another newUpn, are left exactly as they were (merging is the caller's, with merge_flag)."""
    store.flag_buckets = 1  # one partition, so the existing rows share a transaction with the others
    await store.create_flags(tenant, [make_flag("user-000", status=RESOLVED),
                                      make_flag("user-001", "before@x.example")])
    before = {u: await store.get_flag(tenant, u) for u in ("user-000", "user-001")}
    batch = [make_flag(f"user-{i:03d}") for i in range(60)]
    created = await store.create_flags(tenant, batch)
    assert created == [f"user-{i:03d}" for i in range(2, 60)]
    for user_id, old in before.items():
        assert old is not None and await store.get_flag(tenant, user_id) == old
    assert len([f async for f in store.iter_flags(tenant)]) == 60


async def test_creating_never_decides_over_an_existing_row(store: StateStore, tenant: str) -> None:
    """A create for a user who has a flag writes nothing, whatever the newUpn: the store keeps no rule
    of its own about what a flag becomes (no superseding, no `previous`)."""
    await store.create_flags(tenant, [make_flag("u1", "first@new.example")])
    stored = await store.get_flag(tenant, "u1")
    assert await store.create_flags(tenant, [make_flag("u1", "FIRST@new.example")]) == []
    assert await store.create_flags(tenant, [make_flag("u1", "second@new.example")]) == []
    assert await store.get_flag(tenant, "u1") == stored


async def test_last_flag_of_a_user_wins_within_one_call(store: StateStore, tenant: str) -> None:
    """Two flags for one user in one call make one row, the later one (no duplicate-key batch error)."""
    created = await store.create_flags(tenant, [make_flag("dup", "a@x.example"), make_flag("other"),
                                                make_flag("dup", "b@x.example")])
    assert sorted(created) == ["dup", "other"]
    stored = await store.get_flag(tenant, "dup")
    assert stored is not None and stored.flag.new_upn == "b@x.example"


async def test_update_flag_etag_conflict_between_two_writers(store: StateStore, other_store: StateStore,
                                                             tenant: str) -> None:
    """Two writers holding the same ETag: the first update wins, the second gets ConcurrencyError."""
    await store.create_flags(tenant, [make_flag("u1")])
    mine = await store.get_flag(tenant, "u1")
    theirs = await other_store.get_flag(tenant, "u1")
    assert mine is not None and theirs is not None
    await other_store.update_flag(tenant, dataclasses.replace(theirs.flag, status=FlagStatus.DISMISSED), theirs.etag)
    with pytest.raises(ConcurrencyError):
        await store.update_flag(tenant, dataclasses.replace(mine.flag, status=RESOLVED), mine.etag)
    final = await store.get_flag(tenant, "u1")
    assert final is not None and final.flag.status == FlagStatus.DISMISSED
    new_etag = await store.update_flag(tenant, dataclasses.replace(final.flag, status=RESOLVED), final.etag)
    again = await store.get_flag(tenant, "u1")
    assert again is not None and again.etag == new_etag and again.flag.status == RESOLVED
    with pytest.raises(NotFound):
        await store.update_flag(tenant, make_flag("ghost"), new_etag)


async def test_list_flags_pages_with_status_filter(store: StateStore, tenant: str) -> None:
    """Paging open flags 10 at a time returns exactly the open ones, in user-id order, each once."""
    await store.create_flags(tenant, [make_flag(f"user-{i:02d}") for i in range(60)])
    for i in range(0, 60, 3):
        current = await store.get_flag(tenant, f"user-{i:02d}")
        assert current is not None
        await store.update_flag(tenant, dataclasses.replace(current.flag, status=RESOLVED), current.etag)
    expected_open = [f"user-{i:02d}" for i in range(60) if i % 3]
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page, token = await store.list_flags(tenant, status="pending", limit=10, page_token=token)
        assert all(f.flag.status == FlagStatus.PENDING for f in page) and len(page) <= 10
        seen += [f.flag.user_id for f in page]
        pages += 1
        if token is None:
            break
    assert seen == expected_open and pages == 4
    resolved, _ = await store.list_flags(tenant, status="resolved", limit=100)
    assert [f.flag.user_id for f in resolved] == [f"user-{i:02d}" for i in range(0, 60, 3)]
    _, first_token = await store.list_flags(tenant, status="pending", limit=5)
    with pytest.raises(InputError):
        await store.list_flags(tenant, status="resolved", page_token=first_token)
    with pytest.raises(InputError):
        await store.list_flags(tenant, page_token="not-a-token")
    with pytest.raises(InputError):
        await store.list_flags(tenant, limit=0)


async def test_a_stored_flag_keeps_its_row_times(store: StateStore, tenant: str, clock: FakeClock) -> None:
    """A created flag records when its row was created and written; an update that passes `created_at` keeps
    the creation time and moves only the write time."""
    await store.create_flags(tenant, [make_flag("u1")])
    created = await store.get_flag(tenant, "u1")
    assert created is not None and created.created_at == created.updated_at == clock.now
    clock.advance(60)
    await store.update_flag(tenant, dataclasses.replace(created.flag, status=RESOLVED), created.etag,
                            created_at=created.created_at)
    updated = await store.get_flag(tenant, "u1")
    assert updated is not None and updated.created_at == created.created_at and updated.updated_at == clock.now
