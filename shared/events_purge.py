"""The events purge: delete expired idempotency keys, which Table Storage would otherwise keep forever.

The `events` table holds one row per claimed event id (a ticket's `eventId`, a policy job's run id), each
with `expires_at`. A claim only matters until it expires (a later claim of the same id takes an expired row
over), but Table Storage has no TTL, so without this the table only grows. The `events_purge` timer runs it
daily (`EVENTS_PURGE_SCHEDULE`) and logs how many rows went; it touches only the deployment's own tenant.
"""
from __future__ import annotations

from shared.services import Services


async def purge_expired_events(services: Services) -> dict[str, int]:
    """Delete this tenant's expired idempotency keys; returns `{"purged": how many rows went}`.

    No Graph call, not even the tenant check: it only deletes expired claims in TENANT_ID's own partition,
    which only runs that confirmed the tenant wrote, so a wrong TENANT_ID finds nothing to delete."""
    return {"purged": await services.store.purge_events(services.settings.tenant_id)}
