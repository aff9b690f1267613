"""The /users subscription's life, lifecycle events, and Event Grid deliveries, end to end."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import AuthError
from shared.upn.subscriptions import SUBSCRIPTION_CHECKPOINT, ensure_subscription
from shared.upn.sweep import sweep
from tests import payloads
from tests.e2e.stack import eventually, running_stack, tenant, uid, user
from tests.e2e.test_upn_e2e import _rename, _subscribe


def _subscriptions(stack) -> list[dict]:
    return stack.sim.state(users=False).get("subscriptions", [])


async def test_the_subscription_is_created_once_renewed_late_and_recreated_when_gone(azurite):
    """Created on first run; left alone while far from expiry; renewed near it; recreated after a 404."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        created = await _subscribe(stack)
        assert created["action"] == "created"
        assert (await ensure_subscription(stack.services))["action"] == "none"
        stored, etag = await stack.services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
        soon = (datetime.now(UTC) + timedelta(days=5)).isoformat()  # as if 24 days had passed
        await stack.services.store.checkpoints.put(SUBSCRIPTION_CHECKPOINT,
                                                  {**stored, "expirationDateTime": soon}, etag)
        renewed = await ensure_subscription(stack.services)
        assert renewed["action"] == "renewed" and renewed["id"] == created["id"]
        assert datetime.fromisoformat(renewed["expirationDateTime"]) > datetime.now(UTC) + timedelta(days=28)
        await stack.services.graph.send_raw("DELETE", f"/subscriptions/{created['id']}")
        stored, etag = await stack.services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
        await stack.services.store.checkpoints.put(SUBSCRIPTION_CHECKPOINT,
                                                  {**stored, "expirationDateTime": soon}, etag)
        recreated = await ensure_subscription(stack.services)  # the renewal gets 404: create a new one
        assert recreated["action"] == "created" and recreated["id"] != created["id"]
        stored, _ = await stack.services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
        assert stored["id"] == recreated["id"]
        assert [s["id"] for s in _subscriptions(stack)] == [recreated["id"]]


async def test_lifecycle_events_reauthorize_recreate_and_sweep(azurite):
    """Graph's lifecycle events reach the function and are carried out through the queue."""
    async with running_stack(azurite, tenant([user(1), user(2)])) as stack:
        await sweep(stack.services)
        created = await _subscribe(stack)
        stack.sim.lifecycle(created["id"], "reauthorizationRequired")

        async def reauthorized() -> bool:
            calls = stack.sim.stats()["calls"]["by_route"]
            return any("reauthorize" in route for route in calls)

        await eventually(reauthorized)
        stack.sim.configure(notify_paused=True)
        await _rename(stack, 2, "user2@fabrikam.example")  # its notification is held back: only "missed" finds it
        stack.sim.lifecycle(created["id"], "missed")
        flag = await eventually(lambda: stack.flag(uid(2)))
        assert flag["source"] == "sweep"
        stack.sim.lifecycle(created["id"], "subscriptionRemoved")

        async def replaced() -> str | None:
            stored, _ = await stack.services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
            return stored["id"] if stored and stored["id"] != created["id"] else None

        new_id = await eventually(replaced)
        assert new_id in [s["id"] for s in _subscriptions(stack)]


async def test_an_event_grid_user_event_ends_as_a_flag_once(azurite, functions):
    """Microsoft's UserUpdated CloudEvent, decoded by the library's converter, is queued and flagged, once."""
    async with running_stack(azurite, tenant([user(1)])) as stack:
        await sweep(stack.services)
        stack.sim.configure(notify_paused=True)
        await _rename(stack, 1, "user1@fabrikam.example")
        event = payloads.event_grid_event(_graph_event(stack, "eventgrid-user-updated", 1))
        for _ in range(2):  # Event Grid delivers at least once
            await functions["upn_events"].get_user_function()(event)
        flag = await eventually(lambda: stack.flag(uid(1)))
        assert flag["source"] == "eventgrid" and flag["newUpn"] == "user1@fabrikam.example"
        assert len(await stack.all_flags()) == 1 and len(flag["history"]) == 1


def _graph_event(stack, name: str, n: int) -> dict:
    """Microsoft's published Graph event `name` for user n of this stack, with our tenant and clientState."""
    return payloads.load(name, tenant_id=stack.tenant_id, user_id=uid(n),
                         client_state=stack.services.settings.notification_client_state or "")


async def test_an_event_grid_event_from_another_tenant_source_changes_nothing(azurite, functions):
    """A CloudEvent whose source names another tenant is refused even when its data names ours."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await stack.services.store.queue.clear()
        delivered = _graph_event(stack, "eventgrid-user-updated", 1)
        delivered["source"] = f"/tenants/{uuid.uuid4()}/applications/{payloads.APPLICATION_ID}"
        with pytest.raises(AuthError, match="source"):
            await functions["upn_events"].get_user_function()(payloads.event_grid_event(delivered))
        assert await stack.services.store.queue.peek_count() == 0


async def test_lifecycle_events_for_another_subscription_change_nothing(azurite, caplog):
    """Published lifecycle notifications naming a subscription id we did not store change nothing, and are
    logged: no reauthorize, no new subscription, no sweep."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        created = await _subscribe(stack)
        stored, _ = await stack.services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
        await stack.services.store.queue.clear()
        before = dict(stack.sim.stats()["calls"]["by_route"])
        stranger = str(uuid.uuid4())
        for name in ("lifecycle-reauthorization-required", "lifecycle-subscription-removed", "lifecycle-missed"):
            body = payloads.wire(payloads.load(name, tenant_id=stack.tenant_id, subscription_id=stranger,
                                               client_state=stack.services.settings.notification_client_state or ""))
            status, _, _ = await stack.post("graph/lifecycle", body, headers={"Content-Type": "application/json"})
            assert status == 202
        assert await stack.host.drain_once() == 3
        after = dict(stack.sim.stats()["calls"]["by_route"])
        assert after == before
        assert (await stack.services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT))[0] == stored
        assert [s["id"] for s in _subscriptions(stack)] == [created["id"]]
        assert sum(stranger in r.getMessage() for r in caplog.records) == 3


async def test_a_subscription_made_before_deleted_was_asked_for_is_replaced(azurite):
    """A stored `updated`-only subscription (an existing deployment) is deleted and recreated as
    `updated,deleted`, so deletions are heard without waiting for the old one to be lost."""
    from msgraph.generated.models.subscription import Subscription

    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        old = await stack.services.graph.client.subscriptions.post(Subscription(
            change_type="updated", resource="users", notification_url=f"{stack.host.url}/api/graph/notifications",
            client_state=stack.services.settings.notification_client_state,
            expiration_date_time=datetime.now(UTC) + timedelta(days=20)))
        assert old is not None and old.expiration_date_time is not None
        await stack.services.store.checkpoints.put(SUBSCRIPTION_CHECKPOINT, {
            "id": old.id, "expirationDateTime": old.expiration_date_time.isoformat(), "createdAt": "2026-01-01Z"})
        result = await _subscribe(stack)
        assert result["action"] == "recreated" and result["id"] != old.id
        assert [(s["id"], s["changeType"]) for s in _subscriptions(stack)] == [(result["id"], "updated,deleted")]
        assert (await ensure_subscription(stack.services))["action"] == "none"
