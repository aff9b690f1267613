"""The daily housekeeping, on Azurite with a clock that moves only when told: it deletes the tenant's expired
idempotency keys, says how many, keeps the live ones, and a second run finds nothing to do; it reclaims the
snapshot and holders slots of users who are gone, and leaves a row written meanwhile alone."""
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
        assert await services.store.events.claim("ticket:a", ttl_seconds=10)
        assert await services.store.events.claim("policy-job|b", ttl_seconds=10)
        now[0] += timedelta(seconds=20)
        assert await services.store.events.claim("ticket:c", ttl_seconds=60)
        nothing = {"snapshotsReclaimed": 0, "holdersReclaimed": 0}
        assert await purge_expired_events(services) == {"purged": 2, **nothing}
        assert await purge_expired_events(services) == {"purged": 0, **nothing}
        assert await services.store.events.claim("ticket:c", ttl_seconds=60) is False
    finally:
        await services.close()


async def test_gone_users_slots_are_reclaimed_and_the_others_kept(azurite):
    """Two of three users forgotten (deleted) and one of two holders gone: their emptied properties leave the grouped
    rows, the others' values stay as they were, and a second run reclaims nothing more."""
    from azure.data.tables.aio import TableClient

    from shared.state.snapshots import snapshot_property
    from shared.state.tables import SNAPSHOTS

    tenant = new_tenant_id()
    settings = Settings.from_env({"TENANT_ID": tenant, "GRAPH_BASE_URL": "http://127.0.0.1:9/v1.0",
                                  "STATE_STORAGE": azurite.connection_string})
    # One bucket of one group: every user shares the row, so the test sees slots freed, not rows dropped.
    store = StateStore.from_settings(settings, flag_buckets=1, snapshot_buckets=1, snapshot_groups=1)
    services = Services(settings=settings, graph=GraphGateway(settings), store=store)
    users = [f"{n:08d}-aaaa-4bbb-8ccc-000000000000" for n in (1, 2, 3)]
    try:
        await store.snapshots.put({u: f"user{n}@contoso.example" for n, u in enumerate(users, 1)})
        await store.snapshots.delete(users[:2])
        now = datetime.now(UTC)
        await store.holders.replace(set(users[1:]), report_refreshed_at=now, read_at=now)
        await store.holders.replace({users[2]}, report_refreshed_at=now, read_at=now)
        assert await purge_expired_events(services) == {"purged": 0, "snapshotsReclaimed": 2, "holdersReclaimed": 1}
        assert await store.snapshots.get(users) == {users[2]: "user3@contoso.example"}
        assert await store.holders.load_all() == {users[2]}
        async with TableClient.from_connection_string(azurite.connection_string, SNAPSHOTS) as table:
            (row,) = [e async for e in table.query_entities("PartitionKey ge @t and PartitionKey lt @u",
                                                             parameters={"t": tenant, "u": tenant + "~"})]
        assert snapshot_property(users[0]) not in row and snapshot_property(users[2]) in row
        assert await purge_expired_events(services) == {"purged": 0, "snapshotsReclaimed": 0, "holdersReclaimed": 0}
    finally:
        await services.close()


async def test_a_row_written_while_it_is_compacted_is_left_for_next_time(azurite, monkeypatch):
    """A processor MERGEs a user into the row between the compaction's read and its replace: the replace is refused
    by the row's ETag, nothing is reclaimed and nothing lost; the next run reclaims the slot."""
    import shared.state.snapshots as snapshots_module

    tenant = new_tenant_id()
    settings = Settings.from_env({"TENANT_ID": tenant, "STATE_STORAGE": azurite.connection_string,
                                  "GRAPH_BASE_URL": "http://127.0.0.1:9/v1.0"})
    store = StateStore.from_settings(settings, flag_buckets=1, snapshot_buckets=1, snapshot_groups=1)
    users = [f"{n:08d}-aaaa-4bbb-8ccc-000000000000" for n in (1, 2, 3)]
    real = snapshots_module.replace_if_still

    async def meanwhile(client, entity, current):  # type: ignore[no-untyped-def]
        await store.snapshots.put({users[2]: "user3@contoso.example"})
        return await real(client, entity, current)

    try:
        await store.snapshots.put({users[0]: "user1@contoso.example", users[1]: "user2@contoso.example"})
        await store.snapshots.delete([users[0]])
        monkeypatch.setattr(snapshots_module, "replace_if_still", meanwhile)
        assert await store.snapshots.compact() == 0
        monkeypatch.setattr(snapshots_module, "replace_if_still", real)
        assert await store.snapshots.get(users) == {users[1]: "user2@contoso.example",
                                                    users[2]: "user3@contoso.example"}
        assert await store.snapshots.compact() == 1
        assert await store.snapshots.get(users) == {users[1]: "user2@contoso.example",
                                                    users[2]: "user3@contoso.example"}
    finally:
        await store.close()
