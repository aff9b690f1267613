"""The daily housekeeping: delete expired idempotency keys, and reclaim the snapshot and holders slots of
users who are gone, both of which Table Storage would otherwise keep forever.

The `events` table holds one row per claimed event id (a ticket's `eventId`, a policy job's run id), each
with `expires_at`. A claim only matters until it expires (a later claim of the same id takes an expired row
over), but Table Storage has no TTL, so without this the table only grows. The grouped `snapshots` and
`holders` rows hold one property per user, and a MERGE can only empty a property: a deleted user's (or a
former holder's) slot stays taken until a row is rewritten without it, and a row holds at most 252. The
`events_purge` timer runs this daily (`EVENTS_PURGE_SCHEDULE`) and logs what went; it touches only the
deployment's own tenant.
"""
from __future__ import annotations

from shared.services import Services


async def purge_expired_events(services: Services) -> dict[str, int]:
    """Delete this tenant's expired idempotency keys and compact its snapshot and holders rows; returns
    `{"purged": rows that went, "snapshotsReclaimed", "holdersReclaimed": slots freed}`.

    No Graph call, not even the tenant check: it only touches TENANT_ID's own partitions, which only runs that
    confirmed the tenant wrote, so a wrong TENANT_ID finds nothing to do."""
    store = services.store
    return {"purged": await store.events.purge(), "snapshotsReclaimed": await store.snapshots.compact(),
            "holdersReclaimed": await store.holders.compact()}
