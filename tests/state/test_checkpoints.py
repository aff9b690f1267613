"""The checkpoints table against Azurite: checkpoint ETags and the ABSENT sentinel, leases and their races."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from shared.errors import ConcurrencyError
from shared.state import ABSENT, StateStore

if TYPE_CHECKING:
    from conftest import FakeClock


async def test_checkpoint_etags_absent_sentinel_and_conflicts(store: StateStore, other_store: StateStore,
                                                              tenant: str) -> None:
    """Create-only with ABSENT, If-Match with an ETag, unconditional with None; losers get ConcurrencyError."""
    assert await store.checkpoints.get("delta") == (None, None)
    etag = await store.checkpoints.put("delta", {"link": "d1"}, etag=ABSENT)
    with pytest.raises(ConcurrencyError):
        await other_store.checkpoints.put("delta", {"link": "other"}, etag=ABSENT)
    value, read_etag = await other_store.checkpoints.get("delta")
    assert value == {"link": "d1"} and read_etag == etag
    etag2 = await store.checkpoints.put("delta", {"link": "d2"}, etag=etag)
    with pytest.raises(ConcurrencyError):
        await other_store.checkpoints.put("delta", {"link": "stale"}, etag=etag)
    assert await store.checkpoints.get("delta") == ({"link": "d2"}, etag2)
    await store.checkpoints.put("delta", {"link": "forced"})
    assert (await store.checkpoints.get("delta"))[0] == {"link": "forced"}
    await store.checkpoints.delete("delta")
    with pytest.raises(ConcurrencyError):
        await store.checkpoints.put("delta", {"link": "x"}, etag=etag2)


async def test_lease_refuses_second_owner_until_expiry(store: StateStore, tenant: str, clock: FakeClock) -> None:
    """A held lease refuses others, can be renewed by its owner, and is taken over once expired."""
    assert await store.checkpoints.acquire_lease("sweep", "worker-a", 60) is True
    assert await store.checkpoints.acquire_lease("sweep", "worker-b", 60) is False
    clock.advance(30)
    assert await store.checkpoints.acquire_lease("sweep", "worker-a", 60) is True  # renewal, now until +90
    clock.advance(45)
    assert await store.checkpoints.acquire_lease("sweep", "worker-b", 60) is False
    clock.advance(20)
    assert await store.checkpoints.acquire_lease("sweep", "worker-b", 60) is True
    assert await store.checkpoints.release_lease("sweep", "worker-a") is False
    assert await store.checkpoints.acquire_lease("sweep", "worker-a", 60) is False
    assert await store.checkpoints.release_lease("sweep", "worker-b") is True
    assert await store.checkpoints.acquire_lease("sweep", "worker-a", 60) is True
    assert await store.checkpoints.get("sweep") == (None, None)  # leases don't shadow checkpoints


async def test_racing_lease_acquirers_get_exactly_one_winner(store: StateStore, other_store: StateStore,
                                                             tenant: str, clock: FakeClock) -> None:
    """Five owners racing for a free (then an expired) lease: exactly one wins each time."""
    results = await asyncio.gather(*(s.checkpoints.acquire_lease("policy", f"w{i}", 10)
                                     for i, s in enumerate([store, other_store] * 3)))
    assert sum(results) == 1
    clock.advance(11)
    results = await asyncio.gather(*(s.checkpoints.acquire_lease("policy", f"late{i}", 10)
                                     for i, s in enumerate([store, other_store] * 3)))
    assert sum(results) == 1


async def test_renewal_extends_only_a_lease_still_held(store: StateStore, tenant: str, clock: FakeClock) -> None:
    """The owner renews for a full term; once another owner took the expired lease, renewal is refused
    and does not take it back; a lease never taken cannot be renewed."""
    assert await store.checkpoints.renew_lease("policy-apply", "run-a", 60) is False  # nothing to renew
    assert await store.checkpoints.acquire_lease("policy-apply", "run-a", 60) is True
    clock.advance(50)
    assert await store.checkpoints.renew_lease("policy-apply", "run-a", 60) is True  # now until +110
    clock.advance(50)
    assert await store.checkpoints.acquire_lease("policy-apply", "run-b", 60) is False  # still held thanks to renewal
    clock.advance(70)
    assert await store.checkpoints.acquire_lease("policy-apply", "run-b", 60) is True  # expired: taken over
    assert await store.checkpoints.renew_lease("policy-apply", "run-a", 60) is False
    assert await store.checkpoints.acquire_lease("policy-apply", "run-a", 60) is False  # run-b keeps it
