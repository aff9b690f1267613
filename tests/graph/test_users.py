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
