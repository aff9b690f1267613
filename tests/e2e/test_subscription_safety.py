"""The subscription manager against graphsim + Azurite: it never registers an unusable clientState, a rotated
clientState replaces the subscription, and instances starting together create one subscription."""
from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
from azure.functions.timer import TimerRequest

from shared.errors import SecretUnavailable
from shared.services import Services
from shared.upn.subscriptions import SUBSCRIPTION_CHECKPOINT, ensure_subscription
from tests.conftest import CLIENT_STATE, make_settings
from tests.e2e.stack import running_stack, tenant, user
from tests.e2e.test_upn_e2e import _notification, _subscribe

ROTATED = "Qm3vX8kP1tR6wZ9bN2cF5hJ0gL4sD7aY3eU6"  # the next clientState, 36 random-looking characters


def _subscriptions(stack) -> list[dict]:
    return stack.sim.state(users=False).get("subscriptions", [])


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
        first = await _subscribe(stack)
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
        status, _, _ = await stack.post("graph/notifications", _notification(stack, 1))
        assert status == 401
        status, _, _ = await stack.post("graph/notifications", _notification(stack, 1, client_state=ROTATED))
        assert status == 202


async def test_a_record_without_a_fingerprint_is_recreated_once(azurite):
    """A subscription stored before fingerprints existed cannot be vouched for, so it is replaced once."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        first = await _subscribe(stack)
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
