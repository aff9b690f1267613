"""A slow or failing notification endpoint, as Graph throttles it: its notifications are held for 10 minutes
once 10 % of its responses are slow, dropped at 15 %, and a failing one is retried for at most 4 hours.
The thresholds are scaled down here (slow = over 150 ms, judged after 10 responses)."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from msgraph import GraphServiceClient
from msgraph.generated.models.subscription import Subscription

from graphsim.launcher import Simulator
from tests.graphsim.conftest import Receiver, araw, base_tenant, no_retry, start, uid

SCALED = {"notify_slow_ms": 150.0, "notify_health_min_samples": 10, "notify_health_window_s": 3600.0,
          "notify_throttle_delay_s": 600.0, "notify_max_per_post": 1}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """Twenty users; each change is its own POST, so every notification is one response to judge."""
    tenant = base_tenant(20)
    tenant["simulator"].update(SCALED)
    yield from start(tenant)


async def _subscribe(client: GraphServiceClient, receiver: Receiver) -> Subscription:
    return await client.subscriptions.post(Subscription(
        change_type="updated", notification_url=receiver.url, resource="users", client_state="secret",
        expiration_date_time=datetime.now(UTC) + timedelta(days=1)), request_configuration=no_retry())


async def _stats(sim: Simulator) -> dict[str, Any]:
    return await asyncio.to_thread(sim.stats)


async def _change(sim: Simulator, n: int, name: str) -> None:
    assert (await araw(sim, "PATCH", f"/users/{uid(n)}", {"displayName": name})).status == 204


def _heard(receiver: Receiver, n: int) -> bool:
    return any(note["resourceData"]["id"] == uid(n) for note in receiver.notifications(changeType="updated"))


async def test_a_slow_endpoint_is_delayed_then_dropped(client: GraphServiceClient, sim: Simulator,
                                                      receiver: Receiver) -> None:
    """1 slow answer in 10 (10 %) makes the endpoint slow: the next notification waits 10 minutes on the
    simulator's clock; a second slow answer (2 in 12, over 15 %) drops the next one for good; a new window
    starts clean."""
    await asyncio.to_thread(sim.clock, frozen=True)
    made = await _subscribe(client, receiver)
    try:
        for n in range(1, 10):                                  # nine quick answers
            await _change(sim, n, "quick")
            await receiver.wait_until(lambda n=n: _heard(receiver, n))
        receiver.delay = 0.4                                     # the tenth is slow: 10 % slow
        await _change(sim, 10, "slow")
        await receiver.wait_until(lambda: _heard(receiver, 10))
        receiver.delay = 0.0
        await _change(sim, 11, "held")
        await receiver.wait_until(lambda: sim.stats()["notifications_delayed"] == 1)   # after the batch window
        assert (await _stats(sim))["endpoints"][receiver.url] == "slow"
        await asyncio.to_thread(sim.clock, advance=599.0)
        assert not _heard(receiver, 11)
        # A second past the ten minutes: on a float clock, 599 + 1 can land one ulp short of 600.
        await asyncio.to_thread(sim.clock, advance=2.0)           # ten minutes later it goes out
        await receiver.wait_until(lambda: _heard(receiver, 11))  # 1 slow in 11: normal again
        receiver.delay = 0.4
        await _change(sim, 12, "slow again")                     # 2 slow in 12: past 15 %
        await receiver.wait_until(lambda: _heard(receiver, 12))
        receiver.delay = 0.0
        dropped = (await _stats(sim))["notifications"].get("throttle_dropped", 0)
        await _change(sim, 13, "dropped")
        await receiver.wait_until(lambda: sim.stats()["notifications"].get("throttle_dropped", 0) == dropped + 1)
        assert (await _stats(sim))["endpoints"][receiver.url] == "drop" and not _heard(receiver, 13)
        await asyncio.to_thread(sim.clock, advance=3600.0)       # the tally is flushed with the window
        await _change(sim, 14, "heard")
        await receiver.wait_until(lambda: _heard(receiver, 14))
        assert not _heard(receiver, 13)
    finally:
        await asyncio.to_thread(sim.clock, frozen=False)
        await araw(sim, "DELETE", f"/subscriptions/{made.id}")


async def test_a_failing_endpoint_is_retried_only_within_the_retry_window(client: GraphServiceClient,
                                                                         sim: Simulator, receiver: Receiver) -> None:
    """A 503 answer is retried with backoff; once notify_retry_window_s has passed on the simulator's clock
    since the first attempt, the notification is given up, and the endpoint's recovery does not bring it."""
    before = {k: v for k, v in sim.configure().items() if k in ("notify_retry_count", "notify_retry_backoff_s",
                                                                 "notify_retry_window_s",
                                                                 "notify_health_min_samples")}
    sim.configure(notify_retry_count=1000, notify_retry_backoff_s=0.05, notify_retry_window_s=4 * 3600.0,
                  notify_health_min_samples=100_000)
    await asyncio.to_thread(sim.clock, frozen=True)
    made = await _subscribe(client, receiver)
    try:
        receiver.status = 503
        expired = (await _stats(sim))["notifications"].get("expired", 0)
        await _change(sim, 15, "never delivered")
        await receiver.wait_until(lambda: receiver.rejected >= 3)        # retried while the window lasts
        # Past the window by a second: frozen + 14400.0 - frozen can come out one ulp short of 14400.0.
        await asyncio.to_thread(sim.clock, advance=4 * 3600.0 + 1.0)
        await receiver.wait_until(lambda: sim.stats()["notifications"].get("expired", 0) == expired + 1)
        receiver.status = 202
        await _change(sim, 16, "delivered")
        await receiver.wait_until(lambda: _heard(receiver, 16))
        assert not _heard(receiver, 15)
    finally:
        receiver.status = 202
        sim.configure(**before)
        await asyncio.to_thread(sim.clock, frozen=False)
        await araw(sim, "DELETE", f"/subscriptions/{made.id}")
