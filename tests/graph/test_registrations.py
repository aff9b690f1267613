"""shared/graph/registrations.py against the simulator: the registration report's passkey holders, of every kind
and no one else, over many pages, at Graph's reports limit (paced, and its 429s waited out), as stale as the
report is, and a 403 without AuditLog.Read.All as MissingGraphPermission."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from devhost.graph_tokens import app_token
from graphsim.launcher import Simulator, start_simulator
from shared.config import Settings
from shared.errors import MissingGraphPermission
from shared.graph.gateway import GraphGateway
from shared.graph.registrations import (
    HOLDERS_PATH,
    PASSKEY_METHODS,
    holders_filter,
    read_passkey_holders,
    report_refreshed_at,
)
from tests.conftest import graph_waits_move_the_clock
from tests.e2e.stack import ANDROID, IOS, YUBI, tenant, uid, user


def _synced(n: int) -> dict[str, Any]:
    doc = user(n, key=None)
    doc["authentication"] = {"fido2Methods": [{"id": f"syn{n}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA0",
                                               "displayName": "iCloud Keychain", "passkeyType": "synced",
                                               "attestationLevel": "notAttested"}]}
    return doc


def holders_tenant() -> dict[str, Any]:
    """User 1 a YubiKey, 2 Authenticator on Android, 3 on iOS, 4 a synced passkey; 5-8 none. The reports limit
    off (tests that need it turn it on); pages of 2 rows."""
    doc = tenant([user(1, key=YUBI), user(2, key=ANDROID), user(3, key=IOS), _synced(4),
                  *[user(n, key=None) for n in range(5, 9)]])
    doc["simulator"].update(reports_requests_per_10s=0.0, registration_report_page_size=2)
    return doc


HOLDERS = {uid(1), uid(2), uid(3), uid(4)}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator per test: tests register passkeys, freeze the clock and turn the limit on."""
    with start_simulator(holders_tenant()) as running:
        yield running


def test_the_filter_names_every_passkey_method_or_ed() -> None:
    """Graph's current passkey names and the older ones, each as an `any` clause, joined by `or`."""
    assert {"passKeyDeviceBound", "passKeyDeviceBoundAuthenticator", "passKeySynced", "fido2"} <= set(PASSKEY_METHODS)
    clauses = holders_filter().split(" or ")
    assert clauses == [f"methodsRegistered/any(m: m eq '{name}')" for name in PASSKEY_METHODS]
    assert "$select" not in HOLDERS_PATH and "$top" not in HOLDERS_PATH


async def test_holders_of_every_kind_and_no_one_else_over_every_page(sim: Simulator, graph: GraphGateway) -> None:
    """Device-bound, Authenticator (Android, iOS) and synced passkey holders are found, the users without a
    passkey are not; 4 holders at 2 a page are 2 pages; the refresh time is the rows' lastUpdatedDateTime."""
    seen: list[tuple[int, int]] = []
    report = await read_passkey_holders(graph, on_page=lambda rows, pages: seen.append((rows, pages)))
    assert report.ids == frozenset(HOLDERS)
    assert report.pages == 2 and seen == [(2, 1), (4, 2)]
    assert report.refreshed_at is not None and report.refreshed_at.tzinfo is not None
    assert abs(report.refreshed_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    assert await report_refreshed_at(graph) == report.refreshed_at
    assert graph.budget.spent == 0  # the reports limit is not the RU bucket


async def test_small_pages_are_all_read(sim: Simulator, graph: GraphGateway) -> None:
    """One row a page: every page is followed by its nextLink, each holder once."""
    sim.configure(registration_report_page_size=1)
    report = await read_passkey_holders(graph)
    assert report.ids == frozenset(HOLDERS) and report.pages == 4


async def test_reads_keep_to_the_reports_limit(sim: Simulator, graph: GraphGateway,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """With Graph's 5 requests per 10 s on (the product's waits move Graph's clock), 9 report requests go 4 at
    once (one fewer than Graph's burst: a request reaches Graph after it took its turn) and then one every 2 s,
    less the little time the requests took: never a 429."""
    waits = graph_waits_move_the_clock(sim, monkeypatch)
    sim.configure(reports_requests_per_10s=5.0, registration_report_page_size=1)
    assert (await read_passkey_holders(graph)).ids == frozenset(HOLDERS)
    await report_refreshed_at(graph)
    assert (await read_passkey_holders(graph)).pages == 4
    assert sim.stats()["throttled"].get("reports", 0) == 0
    assert len(waits) == 5 and all(1.5 < w <= 2.0 for w in waits)  # requests 5 to 9: 2 s each


async def test_a_reports_429_is_waited_out_and_the_read_completes(sim: Simulator, graph: GraphGateway,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Another instance of the app spent the reports limit: Graph's 429s are honoured (the SDK's retries wait
    each `Retry-After`; still refused, the pace holds for it and sends again) and the read completes."""
    waits = graph_waits_move_the_clock(sim, monkeypatch)
    sim.configure(reports_requests_per_10s=5.0, registration_report_page_size=10)
    sim.clock(frozen=True)  # the limit refills only when the product waits on its pace
    for _ in range(5):  # the other instance: same app, same tenant
        await graph.send_raw("GET", HOLDERS_PATH)
    report = await read_passkey_holders(graph)
    assert report.ids == frozenset(HOLDERS) and report.pages == 1
    assert sim.stats()["throttled"]["reports"] >= 1
    assert sum(waits) >= 2.0  # at least Graph's first Retry-After (a request a 2 s at 5 per 10 s)


async def test_a_registration_after_the_reports_refresh_shows_only_after_the_next(
        sim: Simulator, graph: GraphGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report is a snapshot: a passkey registered after its refresh is not listed (nor is the refresh time
    moved) until Graph refreshes the report. (The product's reports pace waits on Graph's clock.)"""
    graph_waits_move_the_clock(sim, monkeypatch)
    sim.configure(registration_report_refresh_s=3600.0)
    sim.clock(frozen=True)
    before = await read_passkey_holders(graph)
    sim.register_passkey(uid(5), displayName="New key", aaGuid=YUBI, passkeyType="deviceBound")
    stale = await read_passkey_holders(graph)
    assert stale.ids == before.ids and uid(5) not in stale.ids
    assert await report_refreshed_at(graph) == before.refreshed_at
    sim.clock(advance=3600.0)
    fresh = await read_passkey_holders(graph)
    assert fresh.ids == frozenset(HOLDERS | {uid(5)})
    assert fresh.refreshed_at is not None and before.refreshed_at is not None
    assert fresh.refreshed_at > before.refreshed_at
    assert await report_refreshed_at(graph) == fresh.refreshed_at


async def test_without_audit_log_read_all_the_report_is_a_missing_permission(sim: Simulator) -> None:
    """An app token without AuditLog.Read.All: Graph's 403 is MissingGraphPermission naming the role."""
    tenant_id = sim.state(users=False)["tenantId"]
    token = app_token(tenant_id, ["Organization.Read.All", "User.Read.All", "UserAuthMethod-Passkey.Read.All"])
    gateway = GraphGateway(Settings.from_env({"TENANT_ID": tenant_id, "STATE_STORAGE": "x",
                                              "GRAPH_BASE_URL": sim.base_url, "GRAPH_DEV_TOKEN": token}))
    try:
        with pytest.raises(MissingGraphPermission) as info:
            await read_passkey_holders(gateway)
        assert "AuditLog.Read.All" in info.value.message and info.value.status == 403
        assert info.value.detail == {"missingRoles": ["AuditLog.Read.All"]}
        with pytest.raises(MissingGraphPermission):
            await report_refreshed_at(gateway)
    finally:
        await gateway.close()
