"""The /users subscription against graphsim + Azurite: its life (created once, renewed late, recreated when gone),
lifecycle events, and its safety: it never registers an unusable clientState, a rotated clientState replaces
it, and instances starting together create one subscription."""
from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.functions.timer import TimerRequest

from shared.errors import SecretUnavailable
from shared.services import Services
from shared.upn.subscriptions import SUBSCRIPTION_CHECKPOINT, ensure_subscription
from shared.upn.sweep import sweep
from tests import payloads
from tests.conftest import CLIENT_STATE, make_settings
from tests.e2e.stack import eventually, running_stack, tenant, uid, user
from tests.upn.stack_steps import notification, rename, subscribe

ROTATED = "Qm3vX8kP1tR6wZ9bN2cF5hJ0gL4sD7aY3eU6"  # the next clientState, 36 random-looking characters


def _subscriptions(stack) -> list[dict]:
    return stack.sim.state(users=False).get("subscriptions", [])


async def test_the_subscription_is_created_once_renewed_late_and_recreated_when_gone(azurite):
    """Created on first run; left alone while far from expiry; renewed near it; recreated after a 404."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        created = await subscribe(stack)
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
        created = await subscribe(stack)
        stack.sim.lifecycle(created["id"], "reauthorizationRequired")

        async def reauthorized() -> bool:
            calls = stack.sim.stats()["calls"]["by_route"]
            return any("reauthorize" in route for route in calls)

        await eventually(reauthorized)
        stack.sim.configure(notify_paused=True)
        await rename(stack, 2, "user2@fabrikam.example")  # its notification is held back: only "missed" finds it
        stack.sim.lifecycle(created["id"], "missed")
        flag = await eventually(lambda: stack.settled_flag(uid(2)))
        assert flag["source"] == "sweep"
        stack.sim.lifecycle(created["id"], "subscriptionRemoved")

        async def replaced() -> str | None:
            stored, _ = await stack.services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
            return stored["id"] if stored and stored["id"] != created["id"] else None

        new_id = await eventually(replaced)
        assert new_id in [s["id"] for s in _subscriptions(stack)]


async def test_lifecycle_events_for_another_subscription_change_nothing(azurite, caplog):
    """Published lifecycle notifications naming a subscription id we did not store change nothing, and are
    logged: no reauthorize, no new subscription, no sweep."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        created = await subscribe(stack)
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
        result = await subscribe(stack)
        assert result["action"] == "recreated" and result["id"] != old.id
        assert [(s["id"], s["changeType"]) for s in _subscriptions(stack)] == [(result["id"], "updated,deleted")]
        assert (await ensure_subscription(stack.services))["action"] == "none"


async def test_the_subscription_covers_updates_and_deletions(azurite):
    """The /users subscription asks Graph for `updated,deleted`, so a permanent deletion is heard too."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await subscribe(stack)
        assert [s["changeType"] for s in stack.sim.state(users=False)["subscriptions"]] == ["updated,deleted"]


def _with_urls(stack, **changes: str) -> None:
    """Point the settings at the served webhooks (and apply `changes`), as _subscribe does."""
    stack.services.settings = replace(stack.services.settings,
                                      notification_url=f"{stack.host.url}/api/graph/notifications",
                                      lifecycle_notification_url=f"{stack.host.url}/api/graph/lifecycle", **changes)


@pytest.mark.parametrize("value", ["@Microsoft.KeyVault(VaultName=kv-pg7x2;SecretName=graph-client-state)",
                                   "<random string, at most 128 characters>", "test-client-state"])
async def test_an_unusable_client_state_is_never_registered(azurite, value):
    """With an unresolved reference, a placeholder or a short clientState: secretUnavailable and no Graph call."""
    async with running_stack(azurite, tenant([user(1)]), drain=False, NOTIFICATION_CLIENT_STATE=value) as stack:
        _with_urls(stack)
        stack.sim.reset_stats()
        with pytest.raises(SecretUnavailable) as info:
            await ensure_subscription(stack.services)
        assert "NOTIFICATION_CLIENT_STATE" in info.value.message and value not in info.value.message
        assert stack.sim.stats()["http_requests"] == 0
        assert _subscriptions(stack) == []
        assert await stack.services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT) == (None, None)


async def test_a_rotated_client_state_recreates_the_subscription(azurite):
    """The record keeps a keyed fingerprint, not the value; a new clientState deletes and recreates."""
    async with running_stack(azurite, tenant([user(1)])) as stack:
        first = await subscribe(stack)
        stored, _ = await stack.services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
        assert stored["clientStateFingerprint"] and CLIENT_STATE not in json.dumps(stored)
        assert (await ensure_subscription(stack.services))["action"] == "none"

        _with_urls(stack, notification_client_state=ROTATED)
        rotated = await ensure_subscription(stack.services)
        assert rotated["action"] == "recreated" and rotated["id"] != first["id"]
        live = _subscriptions(stack)
        assert [(s["id"], s["clientState"]) for s in live] == [(rotated["id"], ROTATED)]
        stored, _ = await stack.services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
        assert stored["id"] == rotated["id"] and ROTATED not in json.dumps(stored)
        assert stored["clientStateFingerprint"] != first["clientStateFingerprint"]
        assert (await ensure_subscription(stack.services))["action"] == "none"

        # Notifications signed with the old value are refused; the new one is accepted.
        status, _, _ = await stack.post("graph/notifications", notification(stack, 1))
        assert status == 401
        status, _, _ = await stack.post("graph/notifications", notification(stack, 1, client_state=ROTATED))
        assert status == 202


async def test_a_record_without_a_fingerprint_is_recreated_once(azurite):
    """A subscription stored before fingerprints existed cannot be vouched for, so it is replaced once."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        first = await subscribe(stack)
        stored, etag = await stack.services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
        legacy = {k: v for k, v in stored.items() if k != "clientStateFingerprint"}
        await stack.services.store.checkpoints.put(SUBSCRIPTION_CHECKPOINT, legacy, etag)
        again = await ensure_subscription(stack.services)
        assert again["action"] == "recreated" and [s["id"] for s in _subscriptions(stack)] == [again["id"]]
        assert again["id"] != first["id"]
        assert (await ensure_subscription(stack.services))["action"] == "none"


def test_the_subscription_timer_runs_on_startup(functions):
    """subscription_manager also runs when an instance starts, so a new deployment subscribes at once."""
    bindings = functions["subscription_manager"].get_bindings_dict()["bindings"]
    trigger = next(b for b in bindings if b["type"] == "timerTrigger")
    assert trigger["runOnStartup"] is True


async def test_instances_starting_together_create_one_subscription(azurite, functions):
    """Three first starts at once (two through the timer function, one on its own Services) make one
    Graph subscription; the others find it or yield to the lease, and none fails."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        _with_urls(stack)
        other = Services.from_settings(replace(make_settings(azurite, stack.sim, stack.tenant_id),
                                               notification_url=stack.services.settings.notification_url,
                                               lifecycle_notification_url=stack.services.settings
                                               .lifecycle_notification_url))
        timer = functions["subscription_manager"].get_user_function()
        try:
            results = await asyncio.gather(timer(TimerRequest(past_due=False)), timer(TimerRequest(past_due=False)),
                                           ensure_subscription(other), return_exceptions=True)
        finally:
            await other.close()
        live = _subscriptions(stack)
        assert len(live) == 1, live
        assert not [r for r in results if isinstance(r, BaseException) and not _yielded(r)], results
        stored, _ = await stack.services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
        assert stored["id"] == live[0]["id"]


def _yielded(exc: BaseException) -> bool:
    """The one outcome besides success allowed to a racing start: it yielded to the lease holder."""
    from shared.errors import ConflictError

    return isinstance(exc, ConflictError)
