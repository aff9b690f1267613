"""shared/graph/subscriptions.py against the simulator: create (the handshake answered by a loopback
receiver), renew, reauthorize and delete a subscription, with Graph's 404 mapped as the use case needs."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from graphsim.launcher import Simulator
from shared.errors import NotFound
from shared.graph.gateway import GraphGateway
from shared.graph.subscriptions import (
    create_subscription,
    delete_subscription,
    reauthorize_subscription,
    renew_subscription,
)
from tests.graph.users_tenant import running_users_tenant
from tests.graphsim.conftest import receiver  # noqa: F401  (the loopback webhook fixture)

CLIENT_STATE = "WizcZFQ02y4ZkG8-fhFNSsqeP6I9AbcO2_hmnJxB"
GONE = "99999999-0000-4000-8000-00000000dead"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    yield from running_users_tenant()


def _live(sim: Simulator) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in sim.state(users=False).get("subscriptions", [])}


async def _create(graph: GraphGateway, url: str, days: int = 20) -> Any:
    return await create_subscription(graph, resource="users", change_type="updated,deleted", notification_url=url,
                                     lifecycle_notification_url=None, client_state=CLIENT_STATE,
                                     expiration=datetime.now(UTC) + timedelta(days=days))


async def test_a_created_subscription_has_the_asked_for_shape(sim, graph, receiver):  # noqa: F811
    """Creation runs Graph's handshake and answers the new id and the expiry Graph granted."""
    created = await _create(graph, receiver.url)
    try:
        assert created.id and created.expiration is not None and len(receiver.validations) == 1
        live = _live(sim)[created.id]
        assert (live["resource"], live["changeType"], live["clientState"]) == ("users", "updated,deleted",
                                                                               CLIENT_STATE)
    finally:
        await delete_subscription(graph, created.id, why="after the test")


async def test_renew_and_reauthorize_keep_it_and_a_lost_one_is_not_found(sim, graph, receiver):  # noqa: F811
    """Renewal moves the expiry; reauthorization is accepted; both raise NotFound for an id Graph lost."""
    created = await _create(graph, receiver.url, days=2)
    try:
        later = datetime.now(UTC) + timedelta(days=25)
        await renew_subscription(graph, created.id, later)
        assert _live(sim)[created.id]["expirationDateTime"].startswith(later.strftime("%Y-%m-%dT%H:%M"))
        await reauthorize_subscription(graph, created.id)
        for call in (renew_subscription(graph, GONE, later), reauthorize_subscription(graph, GONE)):
            with pytest.raises(NotFound):
                await call
    finally:
        await delete_subscription(graph, created.id, why="after the test")


async def test_deleting_one_already_gone_counts_as_deleted(sim, graph, receiver):  # noqa: F811
    """Deletion removes the subscription; deleting it again (or any lost id) is not an error."""
    created = await _create(graph, receiver.url)
    await delete_subscription(graph, created.id, why="of a rotated clientState")
    assert created.id not in _live(sim)
    await delete_subscription(graph, created.id, why="of a rotated clientState")
