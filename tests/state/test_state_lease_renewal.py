"""renew_lease: the fence before each policy write extends only a lease its owner still holds."""
from __future__ import annotations

from shared.state import StateStore
from tests.state.conftest import FakeClock


async def test_renewal_extends_only_a_lease_still_held(store: StateStore, tenant: str, clock: FakeClock) -> None:
    """The owner renews for a full term; once another owner took the expired lease, renewal is refused
    and does not take it back; a lease never taken cannot be renewed."""
    assert await store.renew_lease(tenant, "policy-apply", "run-a", 60) is False  # nothing to renew
    assert await store.acquire_lease(tenant, "policy-apply", "run-a", 60) is True
    clock.advance(50)
    assert await store.renew_lease(tenant, "policy-apply", "run-a", 60) is True  # now until +110
    clock.advance(50)
    assert await store.acquire_lease(tenant, "policy-apply", "run-b", 60) is False  # still held thanks to renewal
    clock.advance(70)
    assert await store.acquire_lease(tenant, "policy-apply", "run-b", 60) is True  # expired: taken over
    assert await store.renew_lease(tenant, "policy-apply", "run-a", 60) is False
    assert await store.acquire_lease(tenant, "policy-apply", "run-a", 60) is False  # run-b keeps it
