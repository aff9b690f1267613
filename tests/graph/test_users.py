"""shared/graph/users.py against the simulator: current UPNs of many ids by $batch, one user by UPN."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from graphsim.launcher import Simulator
from shared.errors import NotFound
from shared.graph.users import current_upns, user_by_upn
from tests.e2e.stack import uid
from tests.graph.users_tenant import ODD_UPN, running_users_tenant

MISSING = "99999999-aaaa-4bbb-8ccc-000000000000"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    yield from running_users_tenant()


async def test_current_upns_reads_many_users_and_none_for_a_missing_one(graph):
    """Each id gets its current UPN from one $batch; an id Graph answers 404 for gets None."""
    upns = await current_upns(graph, [uid(1), uid(2), MISSING])
    assert upns == {uid(1): "user1@contoso.example", uid(2): "user2@contoso.example", MISSING: None}
    assert graph.counters.by_method["POST"] == 1 and graph.counters.batch_items == 3  # one $batch of three


async def test_current_upns_of_no_one_sends_nothing(graph):
    """No ids, no request (not even the tenant check)."""
    assert await current_upns(graph, []) == {}
    assert graph.counters.requests == 0


async def test_a_user_is_found_by_a_upn_holding_quote_hash_and_friends(graph):
    """A UPN with ' # ^ ~ ! is encoded as an OData key the simulator (like Graph) reads back."""
    found = await user_by_upn(graph, ODD_UPN)
    assert found["id"] == uid(5) and found["userPrincipalName"] == ODD_UPN


async def test_an_unknown_upn_is_not_found(graph):
    """A UPN no user has is NotFound, which the ticket use case turns into a 400 naming the field."""
    with pytest.raises(NotFound):
        await user_by_upn(graph, "nobody@contoso.example")



async def test_the_user_count_is_read_in_one_request_with_eventual_consistency(graph, sim):
    """`count_users` asks Graph's advanced query count in one request and charges its RU to the tenant's pace;
    without `ConsistencyLevel: eventual` the simulator, like Graph, refuses `$count`."""
    from shared.errors import GraphError
    from shared.graph.users import COUNT_PATH, count_users
    from tests.graph.users_tenant import users_tenant

    before = sim.stats()["calls"]["by_route"].get("GET /users", 0)
    spent = graph.budget.spent
    assert await count_users(graph) == len(users_tenant()["users"])
    assert sim.stats()["calls"]["by_route"].get("GET /users", 0) == before + 1
    assert graph.budget.spent - spent == 1
    with pytest.raises(GraphError):
        await graph.get_json(COUNT_PATH, what="count users without the header")
