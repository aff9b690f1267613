"""The one local stack (`devhost.stack`) the tests, benchmarks, `devhost up` and the demo all start."""
from __future__ import annotations

import os

from devhost.azurite import Azurite
from devhost.stack import local_stack, loopback, stack_settings, tenant_id_of
from shared.services import get_services
from tests.e2e.stack import tenant, user


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_settings_point_the_product_at_this_stack(azurite: Azurite) -> None:
    """The three loopback settings come from the running processes; the caller's values add or override."""
    doc = tenant([user(1)])
    with loopback(doc, azurite=azurite) as (storage, sim):
        values = stack_settings(storage, sim, tenant_id_of(doc), GRAPH_DEV_TOKEN="t", TENANT_ID="x")
        assert values == {"TENANT_ID": "x", "GRAPH_BASE_URL": sim.base_url,
                          "STATE_STORAGE": azurite.connection_string, "GRAPH_DEV_TOKEN": "t"}
        sim_pid = sim.pid
    assert not _alive(sim_pid) and azurite.alive()  # the caller's Azurite keeps running


async def test_local_stack_serves_the_app_and_stops_what_it_started() -> None:
    """A stack of its own: Services installed, function app served, and every process stopped afterwards."""
    doc = tenant([user(1)])
    async with local_stack(doc, settings={"GRAPH_DEV_TOKEN": "t"}, ensure_store=True) as stack:
        assert stack.host is not None and stack.host.url.startswith("http://127.0.0.1:")
        assert get_services() is stack.services and stack.tenant_id == doc["tenantId"]
        pids = (stack.azurite.pid, stack.sim.pid)
        assert all(_alive(pid) for pid in pids)
    assert not any(_alive(pid) for pid in pids)
