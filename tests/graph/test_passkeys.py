"""shared/graph/passkeys.py against the simulator: every user's passkeys in bulk, and deleting some of them."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from graphsim.launcher import Simulator
from shared.graph.passkeys import delete_passkeys, read_passkeys
from tests.e2e.stack import uid
from tests.graph.users_tenant import running_users_tenant

MISSING = "99999999-aaaa-4bbb-8ccc-000000000000"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    yield from running_users_tenant()


def _held(sim: Simulator, n: int) -> list[str]:
    me = next(u for u in sim.state()["users"] if u["id"] == uid(n))
    return [p["id"] for p in me.get("authentication", {}).get("fido2Methods", [])]


async def test_passkeys_of_many_users_come_as_raw_json(graph):
    """One $batch: a user's fido2Methods as Graph sent them; none for a user without, or one Graph lacks."""
    found = await read_passkeys(graph, [uid(1), uid(2), MISSING])
    assert [p["aaGuid"] for p in found[uid(1)]] == ["cb69481e-8ff7-4039-93ec-0a2729a154a8"]
    assert found[uid(2)] == [] and found[MISSING] == []


async def test_deleting_passkeys_removes_them_and_one_already_gone_is_fine(sim, graph):
    """The named passkeys go; deleting one that is already gone counts as deleted (no error)."""
    sim.register_passkey(uid(3), aaGuid="de1e552d-db1d-4423-a619-566b625cdc84", displayName="Authenticator")
    old, new = _held(sim, 3)
    await delete_passkeys(graph, uid(3), [old])
    assert _held(sim, 3) == [new]
    await delete_passkeys(graph, uid(3), [old])  # a retried cleanup
    assert _held(sim, 3) == [new]
