"""Launcher, authentication, Graph's error envelope and headers, routing, control knobs."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from msgraph import GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.users.item.user_item_request_builder import UserItemRequestBuilder

from graphsim.launcher import REPO_ROOT, Simulator, start_simulator
from tests.graphsim.conftest import base_tenant, no_retry, raw, start, uid


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A small tenant."""
    yield from start(base_tenant(5))


def test_launcher_exposes_urls_pid_and_listens(sim: Simulator) -> None:
    """The launcher returns a live process on a loopback port with the documented URLs."""
    assert sim.base_url == f"http://127.0.0.1:{sim.port}/v1.0"
    assert sim.root_url == f"http://127.0.0.1:{sim.port}"
    os.kill(sim.pid, 0)
    with socket.create_connection(("127.0.0.1", sim.port), 1):
        pass
    assert sim.control("GET", "health")["users"] == 5


def test_launcher_stop_ends_the_process_and_context_manager_stops() -> None:
    """stop() (and leaving the with-block) ends the simulator process."""
    with start_simulator({"users": []}) as other:
        pid, port = other.pid, other.port
        assert other.state(users=False)["userCount"] == 0
    assert other.proc.poll() is not None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), 0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_simulator_exits_when_its_launcher_dies() -> None:
    """A simulator whose launching process dies without stop() shuts itself down (no orphans in CI)."""
    script = ("import os, sys; sys.path.insert(0, sys.argv[1]); from graphsim.launcher import start_simulator; "
              "sim = start_simulator({'users': []}); print(sim.port, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", script, str(REPO_ROOT)], capture_output=True, text=True, timeout=60,
                         check=True)
    port = int(out.stdout.strip())
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
        except OSError:
            break
        time.sleep(0.1)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), 0.2)


def test_launcher_reports_a_bad_tenant_file_with_the_log() -> None:
    """A tenant the simulator refuses makes start_simulator fail with the simulator's own message."""
    with pytest.raises(RuntimeError, match="tenantId must be a GUID"):
        start_simulator({"tenantId": "not-a-guid"})


def test_missing_token_is_401_invalid_authentication_token(sim: Simulator) -> None:
    """No bearer token: 401 with Graph's envelope and request ids."""
    resp = raw(sim, "GET", f"/users/{uid(1)}", token=None)
    assert resp.status == 401
    err = resp.body["error"]
    assert err["code"] == "InvalidAuthenticationToken" and err["message"]
    assert err["innerError"]["request-id"] == resp.headers["request-id"]
    assert set(err["innerError"]) == {"date", "request-id", "client-request-id"}


def test_responses_carry_request_ids_and_resource_units(sim: Simulator) -> None:
    """Every answer has request-id, the echoed client-request-id and x-ms-resource-unit."""
    resp = raw(sim, "GET", f"/users/{uid(1)}?$select=id", headers={"client-request-id": "abc-123"})
    assert resp.status == 200
    assert resp.headers["client-request-id"] == "abc-123" and resp.headers["request-id"]
    assert resp.headers["x-ms-resource-unit"] == "1"


async def test_unknown_user_is_404_odata_error_in_the_sdk(client: GraphServiceClient) -> None:
    """The SDK sees an unknown id as ODataError 404 Request_ResourceNotFound."""
    with pytest.raises(ODataError) as info:
        await client.users.by_user_id("00000000-dead-4bad-8bad-000000000000").get(request_configuration=no_retry())
    assert info.value.response_status_code == 404
    assert info.value.error.code == "Request_ResourceNotFound"


async def test_sdk_get_user_with_select(client: GraphServiceClient) -> None:
    """GET /users/{id} with $select through the SDK returns only what was asked for."""
    params = UserItemRequestBuilder.UserItemRequestBuilderGetQueryParameters(select=["id", "userPrincipalName"])
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    got = await client.users.by_user_id(uid(2)).get(RequestConfiguration(query_parameters=params))
    assert got.user_principal_name == "user2@contoso.example"
    assert got.display_name is None


def test_unknown_segment_is_400_and_wrong_method_405(sim: Simulator) -> None:
    """Unknown path segments answer 400 BadRequest; a known path with another method answers 405."""
    resp = raw(sim, "GET", "/nonsense")
    assert resp.status == 400 and resp.body["error"]["code"] == "BadRequest"
    assert raw(sim, "PUT", f"/users/{uid(1)}", {}).status == 405


def test_beta_prefix_is_an_alias(sim: Simulator) -> None:
    """/beta serves the same routes as /v1.0."""
    resp = raw(sim, "GET", f"{sim.root_url}/beta/users/{uid(1)}?$select=id")
    assert resp.status == 200 and resp.body["id"] == uid(1)


def test_config_knobs_are_validated_and_applied(sim: Simulator) -> None:
    """PATCH /_sim/config refuses unknown knobs and wrong types, and applies good ones."""
    with pytest.raises(RuntimeError, match="unknown simulator knob"):
        sim.configure(no_such_knob=1)
    with pytest.raises(RuntimeError, match="rate between 0 and 1"):
        sim.configure(fault_503_rate=2)
    with pytest.raises(RuntimeError, match="wrong type"):
        sim.configure(throttle_enabled="yes")
    assert sim.configure(users_page_size=7)["users_page_size"] == 7
    assert len(raw(sim, "GET", "/users").body["value"]) == 5
    sim.configure(users_page_size=100)


def test_stats_count_calls_by_route_and_status(sim: Simulator) -> None:
    """/_sim/stats counts calls per route template and status, RU and writes; reset zeroes them."""
    sim.reset_stats()
    raw(sim, "GET", f"/users/{uid(1)}")
    raw(sim, "GET", "/users/00000000-dead-4bad-8bad-000000000000")
    raw(sim, "PATCH", f"/users/{uid(1)}", {"displayName": "Renamed"})
    stats = sim.stats()
    assert stats["calls"]["by_route"]["GET /users/{id}"] == 2
    assert stats["calls"]["by_status"] == {"200": 1, "404": 1, "204": 1}
    assert stats["resource_units"] == 3 and stats["writes"] == 1
    assert sim.reset_stats()["calls"]["total"] == 0


def test_state_dump_is_ground_truth(sim: Simulator) -> None:
    """/_sim/state shows what the simulator holds, passkeys included."""
    state = sim.state()
    mine = {u["id"]: u for u in state["users"]}
    assert mine[uid(3)]["authentication"]["fido2Methods"][0]["aaGuid"] == "cb69481e-8ff7-4039-93ec-0a2729a154a8"
    assert state["tenantId"] == "11111111-1111-4111-8111-111111111111"
