"""The HTTP use cases on plain values, called directly with a `Request`: anonymous health says only healthy or
degraded while readers learn which secret setting is unusable (by name, never its value); a queued job answers
202 with where to poll; ids and query parameters are checked before use; Graph's handshake is echoed as inert text;
the flags export is a CSV attachment. (Routing, access and body limits: tests/functions/.)"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from devhost.azurite import ACCOUNT_KEY, ACCOUNT_NAME
from graphsim.launcher import Simulator, start_simulator
from shared import http_api
from shared.config import Settings
from shared.errors import InputError
from shared.http_api import Request
from shared.principal import ADMIN_ROLE, Principal
from shared.services import Services
from shared.upn.flag_views import CSV_COLUMNS
from tests.e2e.stack import tenant, user

ADMIN = Principal(auth_type="aad", name="Ada Admin", object_id="0a0a0a0a-0000-4000-8000-00000000000a",
                  roles=frozenset({ADMIN_ROLE}))


@pytest.fixture
async def app(stack_factory: Any) -> AsyncIterator[Callable[..., Any]]:
    """`await build(**env) -> (Services, Simulator)`: the product's services for a one-user tenant."""
    sims: list[Simulator] = []

    async def build(**env: str) -> tuple[Services, Simulator]:
        sim = start_simulator(tenant([user(1)]))
        sims.append(sim)
        return await stack_factory(sim, **env), sim

    yield build
    for sim in sims:
        sim.stop()


@pytest.fixture
async def unreachable() -> AsyncIterator[Services]:
    """Services whose Graph and storage are loopback ports nobody answers: a check that comes before any read
    answers, where anything that reads would fail as unavailable instead."""
    nowhere = f"http://127.0.0.1:9/{ACCOUNT_NAME}"
    services = Services.from_settings(Settings.from_env({
        "TENANT_ID": "77777777-8888-4999-8aaa-bbbbbbbbbbbb", "GRAPH_BASE_URL": "http://127.0.0.1:9/v1.0",
        "STATE_STORAGE": f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
                         f"TableEndpoint={nowhere};QueueEndpoint={nowhere};"}))
    try:
        yield services
    finally:
        await services.close()


def request(method: str, route: str, *, params: dict[str, str] | None = None, body: bytes | None = None,
            route_params: dict[str, str] | None = None, principal: Principal | None = ADMIN) -> Request:
    return Request.from_parts(method=method, url=f"https://guard.example/api/{route}?code=k", headers={},
                              params=params or {}, route_params=route_params or {}, body=body, principal=principal)


def test_a_request_is_plain_values() -> None:
    """The method is upper-cased, header names lower-cased (so lookups do not depend on the sender's case), and a
    missing body is empty bytes."""
    req = Request.from_parts(method="post", url="https://x/api/tickets", headers={"X-Signature": "s"}, params={},
                             route_params={}, body=None)
    assert req.method == "POST" and req.headers == {"x-signature": "s"} and req.body == b""
    assert req.principal is None


async def test_health_degrades_on_an_unusable_secret_and_only_readers_learn_which(app: Any) -> None:
    """With a placeholder in a secret setting, anonymous health is a bare 503 `degraded`; the details (200) name
    the setting and the reason, and neither shows the value."""
    services, _ = await app(TICKET_WEBHOOK_SECRET="changeme")
    anonymous = await http_api.health(services, request("GET", "health", principal=None))
    assert anonymous.status == 503 and set(anonymous.body) == {"status", "checkedSecondsAgo"}
    assert anonymous.body["status"] == "degraded"
    details = await http_api.health_details(services, request("GET", "health/details"))
    assert details.status == 200 and details.body["status"] == "degraded"
    assert details.body["unavailableSecrets"] == {"TICKET_WEBHOOK_SECRET": "placeholder"}
    assert details.body["graph"] == {"ok": True} and details.body["storage"] == {"ok": True}
    assert "changeme" not in json.dumps(details.body) + anonymous.encoded().decode()


async def test_a_queued_job_answers_202_with_where_to_poll(app: Any) -> None:
    """POST policy/plan: 202 with the run id, the run's path in the body and its absolute URL (this host, no
    query) in Location; the run names the caller App Service vouched for."""
    services, _ = await app()
    answer = await http_api.policy_plan(services, request("POST", "policy/plan"))
    run_id = answer.body["runId"]
    assert answer.status == 202 and answer.body["status"] == "queued"
    assert answer.body["location"] == f"/api/runs/{run_id}"
    assert answer.headers == {"Location": f"https://guard.example/api/runs/{run_id}"}
    shown = await http_api.run_get(services, request("GET", f"runs/{run_id}", route_params={"runId": run_id}))
    assert shown.status == 200 and shown.body["status"] == "queued" and "request" not in shown.body
    assert (await services.store.runs.get(run_id))["actor"]["name"] == "Ada Admin"


@pytest.mark.parametrize("run_id", ["", "abc", "A" * 32, "g" * 32, "../" + "a" * 29, "a" * 33])
async def test_a_run_id_must_be_one(unreachable: Services, run_id: str) -> None:
    """GET runs/{runId} takes 32 lowercase hex digits only; anything else is a 400 saying what a run id is,
    before storage is asked."""
    with pytest.raises(InputError, match="32 lowercase hex digits"):
        await http_api.run_get(unreachable, request("GET", "runs/x", route_params={"runId": run_id}))


@pytest.mark.parametrize("limit", ["0", "101", "-1", "+5", " 5", "1e2", "5.0", "٣", "9" * 10])
async def test_a_limit_must_be_a_whole_number_in_range(unreachable: Services, limit: str) -> None:
    """`limit` is ASCII digits from 1 to 100 for runs: signs, spaces, exponents, other scripts' digits and huge
    numbers are a 400 naming the parameter and the range, before storage is asked."""
    with pytest.raises(InputError, match="limit must be a whole number from 1 to 100"):
        await http_api.runs_list(unreachable, request("GET", "runs", params={"limit": limit}))


async def test_the_documented_limits_are_taken(app: Any) -> None:
    """An empty limit is the default; 1 and 100 are in range."""
    services, _ = await app()
    for limit in ("", "1", "100"):
        answer = await http_api.runs_list(services, request("GET", "runs", params={"limit": limit}))
        assert answer.status == 200 and answer.body == {"value": [], "nextPageToken": None}


@pytest.mark.parametrize("handler", [http_api.graph_notifications, http_api.graph_lifecycle])
async def test_the_graph_handshake_is_echoed_as_inert_text(unreachable: Services, handler: Any) -> None:
    """A validation request gets its token back as text/plain with nosniff, so no browser renders a caller-chosen
    string as HTML; the body is not read and nothing is queued (storage does not even answer here)."""
    token = "<script>alert(1)</script>"
    answer = await handler(unreachable, request("POST", "graph/notifications", params={"validationToken": token},
                                             body=b"not json", principal=None))
    assert answer.status == 200 and answer.text == token and answer.mimetype == "text/plain"
    assert answer.headers == {"X-Content-Type-Options": "nosniff"}


async def test_the_flags_export_is_a_csv_attachment(app: Any) -> None:
    """GET flags/export is text/csv, offered as a download, starting with the column names."""
    services, _ = await app()
    answer = await http_api.flags_export(services, request("GET", "flags/export"))
    assert answer.status == 200 and answer.mimetype == "text/csv"
    assert answer.headers["Content-Disposition"] == 'attachment; filename="passkey-guard-flags.csv"'
    assert next(csv.reader(io.StringIO(answer.text or ""))) == list(CSV_COLUMNS)
