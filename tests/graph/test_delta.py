"""shared/graph/delta.py against the simulator: users/delta pages read in full then as changes, deletions told
apart from soft deletions, and an expired token raised as DeltaExpired."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from graphsim.launcher import Simulator, start_simulator
from shared.graph.delta import DELTA_START, DeltaExpired, DeltaUser, read_delta_page
from shared.graph.gateway import GraphGateway
from tests.e2e.stack import uid
from tests.graph.users_tenant import users_tenant


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    doc = users_tenant()
    doc["simulator"]["delta_page_size"] = 2
    with start_simulator(doc) as running:
        yield running


async def _read_all(graph: GraphGateway, link: str) -> tuple[list[DeltaUser], str]:
    """Every page from `link`; (the users, the delta link of the last page)."""
    users: list[DeltaUser] = []
    while True:
        page = await read_delta_page(graph, link)
        users += page.users
        if page.next_link is None:
            assert page.delta_link
            return users, page.delta_link
        assert page.delta_link is None
        link = page.next_link


async def test_a_full_read_pages_through_every_user_then_only_changes(graph):
    """From DELTA_START every user comes, a few a page, with its UPN; from the delta link, only the renamed one."""
    from msgraph.generated.models.user import User

    users, delta_link = await _read_all(graph, DELTA_START)
    assert {u.id for u in users} == {uid(n) for n in range(1, 6)} and all(u.upn and not u.deleted for u in users)
    assert graph.budget.spent == graph.counters.by_method["GET"] - 1  # 1 RU a page (the other GET: tenant check)
    await graph.client.users.by_user_id(uid(2)).patch(User(user_principal_name="user2@fabrikam.example"))
    changed, _ = await _read_all(graph, delta_link)
    assert changed == [DeltaUser(id=uid(2), upn="user2@fabrikam.example")]


async def test_a_purged_user_is_deleted_and_a_soft_deleted_one_left_out(graph):
    """A soft deletion (restorable) is not reported; the purge that follows is, as `deleted`."""
    _, delta_link = await _read_all(graph, DELTA_START)
    await graph.send_raw("DELETE", f"/users/{uid(4)}")
    soft, delta_link = await _read_all(graph, delta_link)
    assert soft == []
    await graph.send_raw("DELETE", f"/directory/deletedItems/{uid(4)}")
    purged, _ = await _read_all(graph, delta_link)
    assert purged == [DeltaUser(id=uid(4), deleted=True)]


async def test_an_invalidated_token_is_delta_expired(sim, graph):
    """A delta link Graph no longer knows (410) raises DeltaExpired, still a GraphError with its status."""
    _, delta_link = await _read_all(graph, DELTA_START)
    sim.invalidate_delta()
    with pytest.raises(DeltaExpired) as info:
        await read_delta_page(graph, delta_link)
    assert info.value.status_code == 410
