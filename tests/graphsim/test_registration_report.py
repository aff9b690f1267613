"""reports/authenticationMethods/userRegistrationDetails: passkey holders by $filter on methodsRegistered, paging,
a snapshot that lags registrations until its refresh, and the reports limit of 5 requests per 10 s."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.models.user_registration_details import UserRegistrationDetails
from msgraph.generated.reports.authentication_methods.user_registration_details.user_registration_details_request_builder import (  # noqa: E501
    UserRegistrationDetailsRequestBuilder,
)

from graphsim.launcher import Simulator
from tests.graphsim.conftest import ANDROID, YUBI, base_tenant, raw, start, uid, user

PATH = "/reports/authenticationMethods/userRegistrationDetails"
DEVICE_BOUND = "methodsRegistered/any(t: t eq 'passKeyDeviceBound')"


def _synced(n: int) -> dict[str, Any]:
    doc = user(n)
    doc["authentication"] = {"fido2Methods": [{"id": f"syn{n}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA0",
                                               "displayName": "iCloud Keychain", "passkeyType": "synced",
                                               "attestationLevel": "notAttested"}]}
    return doc


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """User 1 a YubiKey, 2 Authenticator on Android, 3 a synced passkey, 4-7 nothing; the reports limit off
    except where a test turns it on."""
    tenant = base_tenant(0, users=[user(1, key=YUBI), user(2, key=ANDROID), _synced(3),
                                   *[user(n) for n in range(4, 8)]])
    tenant["simulator"]["reports_requests_per_10s"] = 0.0
    yield from start(tenant)


@contextlib.contextmanager
def frozen(sim: Simulator, **knobs: Any) -> Iterator[None]:
    """The simulator's clock frozen and `knobs` set for one test, both undone afterwards."""
    before = {k: v for k, v in sim.configure().items() if k in knobs}
    sim.configure(**knobs)
    sim.clock(frozen=True)
    try:
        yield
    finally:
        sim.clock(frozen=False)
        sim.configure(**before)


def _all(sim: Simulator, first: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    page = raw(sim, "GET", first)
    while True:
        assert page.status == 200, page.body
        rows += page.body["value"]
        if "@odata.nextLink" not in page.body:
            return rows
        page = raw(sim, "GET", page.body["@odata.nextLink"])


def filtered(expression: str) -> str:
    """The report's URL with `expression` as its $filter."""
    return f"{PATH}?$filter={quote(expression)}"


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(r["id"] for r in rows)


def test_methods_registered_names_each_kind_of_passkey(sim: Simulator) -> None:
    """Rows have the documented shape; a YubiKey is passKeyDeviceBound, Authenticator
    passKeyDeviceBoundAuthenticator, a synced passkey passKeySynced, and no one is reported as plain fido2."""
    rows = {r["id"]: r for r in _all(sim, PATH)}
    assert len(rows) == 7
    assert rows[uid(1)]["methodsRegistered"] == ["passKeyDeviceBound"]
    assert rows[uid(2)]["methodsRegistered"] == ["passKeyDeviceBoundAuthenticator"]
    assert rows[uid(3)]["methodsRegistered"] == ["passKeySynced"]
    assert rows[uid(4)]["methodsRegistered"] == [] and rows[uid(4)]["isPasswordlessCapable"] is False
    assert set(rows[uid(1)]) == {
        "id", "userPrincipalName", "userDisplayName", "userType", "isAdmin", "isSsprRegistered", "isSsprEnabled",
        "isSsprCapable", "isMfaRegistered", "isMfaCapable", "isPasswordlessCapable",
        "isSystemPreferredAuthenticationMethodEnabled", "systemPreferredAuthenticationMethods",
        "userPreferredMethodForSecondaryAuthentication", "methodsRegistered", "lastUpdatedDateTime"}
    assert rows[uid(1)]["userPrincipalName"] == "user1@contoso.example" and rows[uid(1)]["isPasswordlessCapable"]
    assert _all(sim, filtered("methodsRegistered/any(t: t eq 'fido2')")) == []


def test_filter_on_methods_registered_finds_the_passkey_holders(sim: Simulator) -> None:
    """`methodsRegistered/any(…)` selects by method, `or` combines them, and booleans filter with eq."""
    assert _ids(_all(sim, f"{PATH}?$filter={quote(DEVICE_BOUND)}")) == [uid(1)]
    either = f"{DEVICE_BOUND} or methodsRegistered/any(t: t eq 'passKeyDeviceBoundAuthenticator')"
    assert _ids(_all(sim, f"{PATH}?$filter={quote(either)}")) == [uid(1), uid(2)]
    capable = _all(sim, f"{PATH}?$filter={quote('isPasswordlessCapable eq true')}")
    assert _ids(capable) == [uid(1), uid(2), uid(3)]
    by_name = _all(sim, filtered("startswith(userPrincipalName,'user3@')"))
    assert _ids(by_name) == [uid(3)]


def test_pages_carry_the_filter_and_order(sim: Simulator) -> None:
    """Small pages follow @odata.nextLink with the filter and $orderby kept; every row comes once."""
    with frozen(sim, registration_report_page_size=2):
        first = raw(sim, "GET", f"{PATH}?$orderby=userPrincipalName%20desc").body
        assert len(first["value"]) == 2 and first["@odata.nextLink"].startswith(sim.base_url + PATH)
        rows = _all(sim, f"{PATH}?$orderby=userPrincipalName%20desc")
        assert [r["userPrincipalName"] for r in rows] == [f"user{n}@contoso.example" for n in range(7, 0, -1)]
        filtered = _all(sim, f"{PATH}?$filter={quote('isMfaRegistered eq false')}")
        assert _ids(filtered) == [uid(n) for n in range(4, 8)]


@pytest.mark.parametrize("query", ["$top=5", "$select=id", "$count=true",
                                   "$filter=" + quote("methodsRegistered eq 'passKeyDeviceBound'"),
                                   f"$filter={quote('isAdmin ne true')}", f"$filter={quote('userType eq')}",
                                   "$orderby=isAdmin", "$skiptoken=garbage"])
def test_unsupported_queries_are_400(sim: Simulator, query: str) -> None:
    """Only $filter and $orderby, each with the operators the documentation lists, are accepted."""
    resp = raw(sim, "GET", f"{PATH}?{query}")
    assert resp.status == 400, resp.body


def test_the_report_lags_registrations_until_its_refresh(sim: Simulator) -> None:
    """A passkey registered after the last refresh is missing from the report (and the user stays
    unfiltered) until the refresh interval passes on the simulator's clock; lastUpdatedDateTime moves then."""
    with frozen(sim, registration_report_refresh_s=3600.0):
        sim.clock(advance=3600.0 - sim.clock()["sinceStart"] % 3600.0)  # onto a refresh, wherever the clock was
        before = raw(sim, "GET", f"{PATH}/{uid(5)}").body
        sim.register_passkey(uid(5), aaGuid=YUBI, passkeyType="deviceBound")
        sim.clock(advance=3599.0)
        assert raw(sim, "GET", f"{PATH}/{uid(5)}").body == before
        assert uid(5) not in _ids(_all(sim, f"{PATH}?$filter={quote(DEVICE_BOUND)}"))
        sim.clock(advance=1.0)
        after = raw(sim, "GET", f"{PATH}/{uid(5)}").body
        assert after["methodsRegistered"] == ["passKeyDeviceBound"]
        assert after["lastUpdatedDateTime"] > before["lastUpdatedDateTime"]
        assert uid(5) in _ids(_all(sim, f"{PATH}?$filter={quote(DEVICE_BOUND)}"))


def test_get_by_id_and_404(sim: Simulator) -> None:
    """One user's row by id; an id the report does not hold is a 404."""
    row = raw(sim, "GET", f"{PATH}/{uid(2)}")
    assert row.status == 200 and row.body["id"] == uid(2) and row.body["@odata.context"].endswith("$entity")
    assert raw(sim, "GET", f"{PATH}/00000000-0000-4000-8000-000000000999").status == 404


def test_reports_allow_five_requests_per_ten_seconds(sim: Simulator) -> None:
    """The sixth report request within 10 s is a 429 with Retry-After; after that long it goes through."""
    with frozen(sim, reports_requests_per_10s=5.0):
        assert [raw(sim, "GET", PATH).status for _ in range(5)] == [200] * 5
        refused = raw(sim, "GET", f"{PATH}/{uid(1)}")
        assert refused.status == 429 and refused.body["error"]["code"] == "TooManyRequests"
        wait = int(refused.headers["Retry-After"])
        assert wait == 2
        sim.clock(advance=wait)
        assert raw(sim, "GET", PATH).status == 200


async def test_sdk_reads_the_report_with_a_filter(client: GraphServiceClient) -> None:
    """The msgraph SDK's reports builder parses the rows into UserRegistrationDetails with the filter applied."""
    params = UserRegistrationDetailsRequestBuilder.UserRegistrationDetailsRequestBuilderGetQueryParameters(
        filter="methodsRegistered/any(t: t eq 'passKeyDeviceBoundAuthenticator')")
    page = await client.reports.authentication_methods.user_registration_details.get(
        RequestConfiguration(query_parameters=params))
    assert [type(r) for r in page.value] == [UserRegistrationDetails]
    assert page.value[0].id == uid(2) and page.value[0].methods_registered == ["passKeyDeviceBoundAuthenticator"]
