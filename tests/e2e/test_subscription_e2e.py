"""The /users subscription's life, lifecycle events, and Event Grid deliveries, end to end."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import azure.functions as func

from shared.upn.service import SUBSCRIPTION_CHECKPOINT, ensure_subscription, sweep
from tests.conftest import CLIENT_STATE
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
        stored, etag = await stack.services.store.get_checkpoint(stack.tenant_id, SUBSCRIPTION_CHECKPOINT)
        soon = (datetime.now(UTC) + timedelta(days=5)).isoformat()  # as if 24 days had passed
        await stack.services.store.put_checkpoint(stack.tenant_id, SUBSCRIPTION_CHECKPOINT,
                                                  {**stored, "expirationDateTime": soon}, etag)
        renewed = await ensure_subscription(stack.services)
        assert renewed["action"] == "renewed" and renewed["id"] == created["id"]
        assert datetime.fromisoformat(renewed["expirationDateTime"]) > datetime.now(UTC) + timedelta(days=28)
        await stack.services.graph.send_raw("DELETE", f"/subscriptions/{created['id']}")
        stored, etag = await stack.services.store.get_checkpoint(stack.tenant_id, SUBSCRIPTION_CHECKPOINT)
        await stack.services.store.put_checkpoint(stack.tenant_id, SUBSCRIPTION_CHECKPOINT,
                                                  {**stored, "expirationDateTime": soon}, etag)
        recreated = await ensure_subscription(stack.services)  # the renewal gets 404: create a new one
        assert recreated["action"] == "created" and recreated["id"] != created["id"]
        stored, _ = await stack.services.store.get_checkpoint(stack.tenant_id, SUBSCRIPTION_CHECKPOINT)
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
            stored, _ = await stack.services.store.get_checkpoint(stack.tenant_id, SUBSCRIPTION_CHECKPOINT)
            return stored["id"] if stored and stored["id"] != created["id"] else None

        new_id = await eventually(replaced)
        assert new_id in [s["id"] for s in _subscriptions(stack)]


async def test_an_event_grid_user_event_ends_as_a_flag_once(azurite, functions):
    """A Graph UserUpdated CloudEvent through the Event Grid trigger is queued and flagged, once."""
    async with running_stack(azurite, tenant([user(1)])) as stack:
        await sweep(stack.services)
        stack.sim.configure(notify_paused=True)
        await _rename(stack, 1, "user1@fabrikam.example")
        data = {"changeType": "updated", "resource": f"Users/{uid(1)}", "tenantId": stack.tenant_id,
                "clientState": CLIENT_STATE, "subscriptionId": "11111111-0000-4000-8000-000000000009",
                "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
                "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{uid(1)}",
                                 "id": uid(1), "organizationId": stack.tenant_id, "sequenceNumber": 7}}
        event = func.EventGridEvent(id="evt-7", data=data, topic="/partnertopics/graph", subject=f"Users/{uid(1)}",
                                    event_type="Microsoft.Graph.UserUpdated", event_time=None, data_version="1.0")
        for _ in range(2):  # Event Grid delivers at least once
            await functions["upn_events"].get_user_function()(event)
        flag = await eventually(lambda: stack.flag(uid(1)))
        assert flag["source"] == "eventgrid" and flag["newUpn"] == "user1@fabrikam.example"
        assert len(await stack.all_flags()) == 1 and len(flag["history"]) == 1
