"""reauthorizationRequired arrives unprompted before a subscription expires, repeats until renewed, and an
unanswered challenge pauses change notifications (the changes are lost) until the app reauthorizes."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from msgraph import GraphServiceClient
from msgraph.generated.models.subscription import Subscription

from graphsim.launcher import Simulator
from tests.graphsim.conftest import Receiver, araw, base_tenant, no_retry, start, uid

SECRET = "client-state-secret"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A small tenant with Graph's default lifecycle knobs (lead 1 h, repeat and pause 15 min)."""
    yield from start(base_tenant(10))


@contextlib.asynccontextmanager
async def subscribed(client: GraphServiceClient, sim: Simulator, receiver: Receiver, minutes: float
                     ) -> AsyncIterator[Subscription]:
    """The simulator's clock frozen and a users subscription with a lifecycle URL expiring in `minutes`
    (Graph's time); afterwards the clock runs again and the subscription is gone."""
    await asyncio.to_thread(sim.clock, frozen=True)
    now = datetime.fromisoformat((await asyncio.to_thread(sim.control, "GET", "clock"))["utc"].replace("Z", "+00:00"))
    made = await client.subscriptions.post(Subscription(
        change_type="updated", notification_url=receiver.url, lifecycle_notification_url=receiver.url + "/lifecycle",
        resource="users", expiration_date_time=now + timedelta(minutes=minutes), client_state=SECRET),
        request_configuration=no_retry())
    try:
        yield made
    finally:
        await asyncio.to_thread(sim.clock, frozen=False)
        await araw(sim, "DELETE", f"/subscriptions/{made.id}")


async def _advance(sim: Simulator, seconds: float) -> dict[str, Any]:
    """Move the simulator's clock; the challenges that fall due are sent before it answers."""
    return await asyncio.to_thread(sim.clock, advance=seconds)


async def _challenges(sim: Simulator) -> int:
    return int((await asyncio.to_thread(sim.stats))["notifications"].get("reauth_challenges", 0))


async def test_a_challenge_arrives_an_hour_before_expiry_and_repeats_until_renewed(
        client: GraphServiceClient, sim: Simulator, receiver: Receiver) -> None:
    """Nothing while expiry is more than reauth_lead_s away; then reauthorizationRequired unprompted to the
    lifecycle URL, again every reauth_repeat_s; renewing moves expiry out of the lead and they stop."""
    async with subscribed(client, sim, receiver, minutes=120) as made:
        base = await _challenges(sim)
        await _advance(sim, 59 * 60)
        assert await _challenges(sim) == base
        await _advance(sim, 2 * 60)
        assert await _challenges(sim) == base + 1
        notes = await receiver.wait_for(lifecycleEvent="reauthorizationRequired")
        assert notes[0]["subscriptionId"] == made.id and notes[0]["clientState"] == SECRET
        await _advance(sim, 14 * 60)
        assert await _challenges(sim) == base + 1
        await _advance(sim, 60)
        assert await _challenges(sim) == base + 2
        await receiver.wait_for(2, lifecycleEvent="reauthorizationRequired")
        later = datetime.now(UTC) + timedelta(days=2)
        await client.subscriptions.by_subscription_id(made.id).patch(Subscription(expiration_date_time=later),
                                                                     request_configuration=no_retry())
        await _advance(sim, 3600)
        assert await _challenges(sim) == base + 2


async def test_an_unanswered_challenge_pauses_notifications_until_reauthorized(
        client: GraphServiceClient, sim: Simulator, receiver: Receiver) -> None:
    """Inside the lead a challenge goes out; notifications still flow for reauth_pause_after_s, then
    changes are lost; POST /reauthorize makes them flow again."""
    async with subscribed(client, sim, receiver, minutes=50) as made:
        await _advance(sim, 0)
        await receiver.wait_for(lifecycleEvent="reauthorizationRequired")
        await araw(sim, "PATCH", f"/users/{uid(1)}", {"displayName": "Still heard"})
        await receiver.wait_for(subscriptionId=made.id, changeType="updated")
        await _advance(sim, 15 * 60)
        lost_before = (await asyncio.to_thread(sim.stats))["notifications"].get("paused_lost", 0)
        await araw(sim, "PATCH", f"/users/{uid(2)}", {"displayName": "Lost while paused"})
        assert (await asyncio.to_thread(sim.stats))["notifications"]["paused_lost"] == lost_before + 1
        await client.subscriptions.by_subscription_id(made.id).reauthorize.post(request_configuration=no_retry())
        await araw(sim, "PATCH", f"/users/{uid(3)}", {"displayName": "Heard again"})
        await receiver.wait_for(2, subscriptionId=made.id, changeType="updated")
        heard = [n["resourceData"]["id"] for n in receiver.notifications(subscriptionId=made.id, changeType="updated")]
        assert heard == [uid(1), uid(3)]


async def test_subscriptions_expire_on_the_simulator_clock(client: GraphServiceClient, sim: Simulator,
                                                           receiver: Receiver) -> None:
    """Once the clock passes expirationDateTime, the subscription is gone and changes are not notified."""
    async with subscribed(client, sim, receiver, minutes=50) as made:
        await _advance(sim, 51 * 60)
        listed = await araw(sim, "GET", "/subscriptions")
        assert made.id not in [s["id"] for s in listed.body["value"]]
        await araw(sim, "PATCH", f"/users/{uid(4)}", {"displayName": "Nobody listens"})
        assert (await asyncio.to_thread(sim.stats))["notifications_pending"] == 0
        assert receiver.notifications(subscriptionId=made.id, changeType="updated") == []
