"""The events purge use case, on Azurite with a clock that moves only when told: it deletes the tenant's
expired idempotency keys, says how many, keeps the live ones, and a second run finds nothing to do."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.config import Settings
from shared.events_purge import purge_expired_events
from shared.graph.gateway import GraphGateway
from shared.services import Services
from shared.state import StateStore
from tests.conftest import new_tenant_id


async def test_expired_claims_go_and_live_ones_stay(azurite):
    """Two claims past their expiry are deleted and counted; a live claim still refuses a repeat."""
    now = [datetime.now(UTC)]  # moved only by the test
    tenant = new_tenant_id()
    settings = Settings.from_env({"TENANT_ID": tenant, "GRAPH_BASE_URL": "http://127.0.0.1:9/v1.0",
                                  "STATE_STORAGE": azurite.connection_string})
    services = Services(settings=settings, graph=GraphGateway(settings),
                        store=StateStore.from_settings(settings, clock=lambda: now[0]))
    try:
        assert await services.store.claim_event(tenant, "ticket:a", ttl_seconds=10)
        assert await services.store.claim_event(tenant, "policy-job|b", ttl_seconds=10)
        now[0] += timedelta(seconds=20)
        assert await services.store.claim_event(tenant, "ticket:c", ttl_seconds=60)
        assert await purge_expired_events(services) == {"purged": 2}
        assert await purge_expired_events(services) == {"purged": 0}
        assert await services.store.claim_event(tenant, "ticket:c", ttl_seconds=60) is False
    finally:
        await services.close()
