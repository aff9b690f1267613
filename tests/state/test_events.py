"""The events table against Azurite: claims once until expired or forgotten, racing claims, the purge."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from shared.state import StateStore

if TYPE_CHECKING:
    from conftest import FakeClock


async def test_claim_event_once_then_false_until_expired_or_forgotten(store: StateStore, tenant: str,
                                                                      clock: FakeClock) -> None:
    """The first claim is True, a repeat False; after expiry or forget_event it can be claimed again."""
    assert await store.events.claim("notif/1#a", 300) is True
    assert await store.events.claim("notif/1#a", 300) is False
    clock.advance(301)
    assert await store.events.claim("notif/1#a", 300) is True
    await store.events.forget("notif/1#a")
    assert await store.events.claim("notif/1#a", 300) is True
    long_id = "ticket-" + "x" * 1000
    assert await store.events.claim(long_id, 300) is True
    assert await store.events.claim(long_id, 300) is False


async def test_concurrent_claims_have_one_winner(store: StateStore, other_store: StateStore, tenant: str) -> None:
    """Eight simultaneous claims of one event id (two processes): exactly one is True."""
    results = await asyncio.gather(*(s.events.claim("evt-1", 60) for s in [store, other_store] * 4))
    assert sum(results) == 1


async def test_purge_events_removes_only_expired(store: StateStore, tenant: str, clock: FakeClock) -> None:
    """purge_events deletes expired claims and keeps live ones."""
    for i in range(5):
        assert await store.events.claim(f"old-{i}", 10)
    clock.advance(20)
    assert await store.events.claim("fresh", 60)
    assert await store.events.purge() == 5
    assert await store.events.claim("fresh", 60) is False
    assert await store.events.claim("old-0", 60) is True
