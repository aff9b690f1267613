"""GraphGateway against the simulator, through msgraph-sdk: raw reads, paging, $batch retries, errors."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from graphsim.launcher import Simulator, start_simulator
from shared.config import Settings
from shared.errors import GraphError, GraphUnavailable, NotFound
from shared.graph.gateway import GraphGateway
from tests.e2e.stack import tenant, uid, user


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    doc = tenant([user(n, key="cb69481e-8ff7-4039-93ec-0a2729a154a8" if n % 2 else None) for n in range(1, 131)])
    with start_simulator(doc) as running:
        yield running


def gateway(sim: Simulator, **env: str) -> GraphGateway:
    settings = Settings.from_env({"TENANT_ID": sim.state(users=False)["tenantId"], "STATE_STORAGE": "x",
                                  "GRAPH_BASE_URL": sim.base_url, "GRAPH_DEV_TOKEN": "gw-token", **env})
    return GraphGateway(settings)


async def test_raw_reads_follow_every_page(sim):
    """get_all follows @odata.nextLink to the end and keeps the raw JSON."""
    gw = gateway(sim)
    try:
        users = await gw.get_all("/users?$select=id,userPrincipalName")
        assert len(users) == 130 and len({u["id"] for u in users}) == 130
        assert gw.counters.requests >= 2  # 100 per page by default
    finally:
        await gw.close()


async def test_batch_get_retries_throttled_items_after_retry_after(sim):
    """Items throttled inside a 200 $batch answer are retried after their Retry-After until they succeed."""
    gw = gateway(sim)
    sim.configure(fault_429_rate=0.4, fault_429_retry_after_s=1, fault_seed=7)
    try:
        answers = await gw.batch_get({uid(n): f"/users/{uid(n)}/authentication/fido2Methods"
                                      for n in range(1, 41)})
    finally:
        sim.configure(fault_429_rate=0.0)
        await gw.close()
    assert {a.status for a in answers.values()} == {200}
    assert gw.counters.throttled_items > 0
    assert [len(answers[uid(n)].body["value"]) for n in (1, 2)] == [1, 0]


async def test_errors_map_to_our_tree(sim):
    """404 is NotFound, a refused token is a GraphError with its status, a dead host is GraphUnavailable."""
    gw = gateway(sim)
    try:
        with pytest.raises(NotFound):
            await gw.get_json("/users/00000000-dead-4bad-8bad-000000000000")
    finally:
        await gw.close()
    dead = gateway(sim, GRAPH_BASE_URL="http://127.0.0.1:9/v1.0")
    try:
        with pytest.raises(GraphUnavailable):
            await dead.get_json("/users")
    finally:
        await dead.close()


async def test_a_request_without_a_token_is_refused_by_graph(sim):
    """The simulator answers 401 with Graph's envelope when no bearer token is sent."""
    from kiota_abstractions.authentication.anonymous_authentication_provider import (
        AnonymousAuthenticationProvider,
    )

    settings = Settings.from_env({"TENANT_ID": "11111111-2222-4333-8444-555555555555", "STATE_STORAGE": "x",
                                  "GRAPH_BASE_URL": sim.base_url})
    gw = GraphGateway(settings, auth_provider=AnonymousAuthenticationProvider())
    try:
        with pytest.raises(GraphError) as error:
            await gw.get_json("/users")
        assert error.value.status_code == 401
    finally:
        await gw.close()
