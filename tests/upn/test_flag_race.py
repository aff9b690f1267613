"""The flag rule under a race: whatever the interleaving, the stored flag is what `merge_flag` decides.

Issue #12 item 3: the store used to carry its own rule ("a different newUpn replaces the row and keeps
the old case in `previous`"), and the processor's save called the store's create without `only_new`.
So when another processor's flag appeared between our read (nothing stored) and our create, the store
decided and the processor believed it had written its candidate. These tests pin the single rule:
the stored flag equals `merge_flag(what the other wrote, ours)`.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

import pytest

from devhost.azurite import Azurite
from shared.config import StorageSettings
from shared.services import Services
from shared.state import StateStore
from shared.upn.decide import decide_change, merge_flag
from shared.upn.flag import Flag
from shared.upn.processor import save_flag

USER = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
A, B, C = "alex@old.example", "alex@new.example", "alex@third.example"


def passkey(ident: str) -> dict[str, Any]:
    return {"id": ident, "displayName": f"key {ident}", "createdDateTime": "2025-06-01T00:00:00Z",
            "aaGuid": "90a3ccdf-635c-4729-a248-9b709135078f"}


def detection(old: str, new: str, keys: list[str], at: datetime) -> Flag:
    """What one processor's decide_change makes of a rename it saw."""
    decision = decide_change(USER, new, old, [passkey(k) for k in keys], source="notification", detected_at=at)
    assert decision.flag is not None
    return decision.flag


@pytest.fixture
def tenant() -> str:
    """A fresh tenant id: tests share one Azurite, never rows."""
    return str(uuid.uuid4())


@pytest.fixture
async def store(azurite: Azurite, tenant: str) -> AsyncIterator[StateStore]:
    """Our processor's store."""
    instance = StateStore(StorageSettings(connection_string=azurite.connection_string), tenant_id=tenant,
                          retry_total=0)
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
async def other_store(azurite: Azurite, tenant: str) -> AsyncIterator[StateStore]:
    """The other processor's store (another instance of the app)."""
    instance = StateStore(StorageSettings(connection_string=azurite.connection_string), tenant_id=tenant,
                          retry_total=0)
    try:
        yield instance
    finally:
        await instance.close()


def processor(store: StateStore) -> Services:
    """The part of Services the flag save uses: the store, bound to its tenant."""
    return cast(Services, SimpleNamespace(store=store, settings=SimpleNamespace(tenant_id=store.tenant_id)))


def after_first_read(store: StateStore, meanwhile: Callable[[], Awaitable[object]]) -> None:
    """Make `store.flags.get` run `meanwhile` right after its first read returns (the race window)."""
    real = store.flags.get
    fired = False

    async def get(user_id: str) -> Any:
        nonlocal fired
        found = await real(user_id)
        if not fired:
            fired = True
            await meanwhile()
        return found

    store.flags.get = get  # type: ignore[method-assign]


async def stored_flag(store: StateStore) -> Flag:
    stored = await store.flags.get(USER)
    assert stored is not None
    return stored.flag


async def test_a_flag_appearing_between_read_and_create_is_merged_not_replaced(
        store: StateStore, other_store: StateStore, tenant: str) -> None:
    """Another processor stores A->B between our read (nothing) and our create of B->C: the row ends as
    merge_flag(A->B, B->C), one case A->C with both processors' passkeys, not B->C with a `previous`."""
    theirs = detection(A, B, ["p1"], T0)
    ours = detection(B, C, ["p1", "p2"], T0 + timedelta(minutes=5))
    after_first_read(store, lambda: save_flag(processor(other_store), theirs))

    await save_flag(processor(store), ours)

    expected = merge_flag(theirs, ours)
    assert expected is not None and expected.old_upn == A and expected.passkey_ids == ("p1", "p2")
    assert await stored_flag(other_store) == expected


async def test_two_processors_saving_at_once_end_with_the_merge_of_both(
        store: StateStore, other_store: StateStore, tenant: str) -> None:
    """Two processors both read "no flag" and both create: one create wins, and the other's detection is
    merged into it by merge_flag, whichever of the two wins."""
    first = detection(A, B, ["p1"], T0)
    second = detection(B, C, ["p1", "p2"], T0 + timedelta(minutes=5))
    both_read = asyncio.Barrier(2)
    for instance in (store, other_store):
        after_first_read(instance, both_read.wait)

    await asyncio.gather(save_flag(processor(store), first),
                         save_flag(processor(other_store), second))

    assert await stored_flag(store) in (merge_flag(first, second), merge_flag(second, first))
