"""refresh_holders against the simulator and Azurite: the first refresh reads the report whole, later ones cost
one request while the report is unchanged, a report refresh brings registrations in, and without
AuditLog.Read.All the refresh is skipped with a warning and never raises."""
from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from devhost.graph_tokens import app_token
from graphsim.launcher import Simulator, start_simulator
from shared.upn.holders import refresh_holders
from tests.conftest import graph_waits_move_the_clock
from tests.e2e.stack import YUBI, uid
from tests.graph.test_registrations import HOLDERS, holders_tenant


@pytest.fixture
def sim() -> Iterator[Simulator]:
    doc = holders_tenant()
    doc["simulator"]["registration_report_refresh_s"] = 3600.0
    with start_simulator(doc) as running:
        running.clock(frozen=True)
        yield running


def _report_requests(sim: Simulator) -> int:
    by_route = sim.stats()["calls"]["by_route"]
    return int(by_route.get("GET /reports/authenticationMethods/userRegistrationDetails", 0))


async def test_refresh_reads_once_then_costs_one_request_until_the_report_changes(
        sim: Simulator, stack_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """First refresh: every page read and the index built. Again with the report unchanged: one request, the
    index as it was. A passkey registered meanwhile shows only after Graph refreshes the report; then the next
    refresh reads it whole and adds that user. `force` reads it whole anyway."""
    graph_waits_move_the_clock(sim, monkeypatch)
    services = await stack_factory(sim)
    first = await refresh_holders(services)
    assert first["current"] is False and first["added"] == 4 and first["removed"] == 0 and first["count"] == 4
    assert first["pages"] == 2 and first["reportRefreshedAt"].endswith("Z")
    assert await services.store.holders.load_all() == HOLDERS

    sim.register_passkey(uid(5), displayName="New key", aaGuid=YUBI, passkeyType="deviceBound")
    sim.reset_stats()
    gets = services.graph.counters.by_method.get("GET", 0)
    again = await refresh_holders(services)
    assert again == {"current": True, "count": 4, "readAt": again["readAt"],
                     "reportRefreshedAt": first["reportRefreshedAt"]}
    assert _report_requests(sim) == 1 and services.graph.counters.by_method["GET"] == gets + 1
    assert await services.store.holders.get([uid(5), uid(1)]) == {uid(1)}  # the report is stale

    sim.clock(advance=3600.0)  # Graph refreshes the report
    fresh = await refresh_holders(services)
    assert fresh["current"] is False and fresh["added"] == 1 and fresh["removed"] == 0 and fresh["count"] == 5
    assert fresh["reportRefreshedAt"] > first["reportRefreshedAt"]
    assert await services.store.holders.get([uid(5)]) == {uid(5)}
    meta = await services.store.holders.meta()
    assert meta is not None and meta.count == 5

    forced = await refresh_holders(services, force=True)
    assert forced["current"] is False and forced["added"] == forced["removed"] == 0 and forced["count"] == 5


async def test_without_audit_log_read_all_the_refresh_is_skipped(sim: Simulator, stack_factory,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """Graph's 403 on the report: `skipped`, a warning that says the product works on without the index,
    nothing stored."""
    tenant_id = sim.state(users=False)["tenantId"]
    token = app_token(tenant_id, ["Organization.Read.All", "User.Read.All", "UserAuthMethod-Passkey.Read.All"])
    services = await stack_factory(sim, GRAPH_DEV_TOKEN=token)
    with caplog.at_level(logging.WARNING, logger="shared.upn.holders"):
        assert await refresh_holders(services) == {"skipped": "AuditLog.Read.All not granted"}
        assert await refresh_holders(services, force=True) == {"skipped": "AuditLog.Read.All not granted"}
    assert any("AuditLog.Read.All" in r.getMessage() and "without it" in r.getMessage() for r in caplog.records)
    assert await services.store.holders.meta() is None
