"""users/delta: $select-scoped change tracking, @removed, $deltaToken=latest, 410 resync, scale."""
from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.users.delta.delta_request_builder import DeltaRequestBuilder

from graphsim.launcher import Simulator, start_simulator
from tests.graphsim.conftest import base_tenant, no_retry, raw, start, uid


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """45 users and a page size of 20, so a full round spans three pages."""
    tenant = base_tenant(45)
    tenant["simulator"]["delta_page_size"] = 20
    yield from start(tenant)


def rounds(sim: Simulator, first: str) -> tuple[list[dict[str, Any]], str]:
    """Follow nextLinks from `first` to the deltaLink; returns the items and the deltaLink."""
    items: list[dict[str, Any]] = []
    page = raw(sim, "GET", first)
    for _ in range(10_000):
        assert page.status == 200, page.body
        items += page.body["value"]
        if "@odata.deltaLink" in page.body:
            return items, page.body["@odata.deltaLink"]
        assert page.body["@odata.nextLink"].startswith(sim.base_url + "/users/delta()?")
        page = raw(sim, "GET", page.body["@odata.nextLink"])
    raise AssertionError("no deltaLink")


async def test_sdk_full_round_then_only_selected_changes(client: GraphServiceClient, sim: Simulator) -> None:
    """A $select delta round through the SDK; afterwards only users whose selected properties changed return."""
    params = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(select=["id", "userPrincipalName"])
    page = await client.users.delta.get(RequestConfiguration(query_parameters=params))
    seen = [u.id for u in page.value]
    while page.odata_next_link:
        assert page.odata_next_link.startswith(sim.base_url)
        page = await client.users.delta.with_url(page.odata_next_link).get(request_configuration=no_retry())
        seen += [u.id for u in page.value]
    assert len(seen) == 45 and len(set(seen)) == 45 and page.odata_delta_link.startswith(sim.base_url)
    raw(sim, "PATCH", f"/users/{uid(4)}", {"userPrincipalName": "four@fabrikam.example"})
    raw(sim, "PATCH", f"/users/{uid(5)}", {"displayName": "Only the name"})
    raw(sim, "PATCH", f"/users/{uid(4)}", {"displayName": "Renamed twice"})
    changed = await client.users.delta.with_url(page.odata_delta_link).get(request_configuration=no_retry())
    assert [(u.id, u.user_principal_name) for u in changed.value] == [(uid(4), "four@fabrikam.example")]
    assert changed.odata_delta_link and not changed.odata_next_link


def test_changes_return_current_values_once(sim: Simulator) -> None:
    """A user changed several times shows once, with its latest values; unchanged rounds are empty."""
    _, link = rounds(sim, "/users/delta?$select=id,userPrincipalName,displayName")
    for name in ("A", "B", "C"):
        raw(sim, "PATCH", f"/users/{uid(6)}", {"displayName": name})
    items, link = rounds(sim, link)
    assert items == [{"id": uid(6), "userPrincipalName": "user6@contoso.example", "displayName": "C"}]
    assert rounds(sim, link)[0] == []


def test_removed_users_carry_reason(sim: Simulator) -> None:
    """Soft delete shows @removed reason changed; permanent delete shows reason deleted; restore shows the user."""
    _, link = rounds(sim, "/users/delta?$select=id,userPrincipalName")
    assert raw(sim, "DELETE", f"/users/{uid(7)}").status == 204
    items, link = rounds(sim, link)
    assert items == [{"id": uid(7), "@removed": {"reason": "changed"}}]
    assert raw(sim, "POST", f"/directory/deletedItems/{uid(7)}/restore").status == 200
    items, link = rounds(sim, link)
    assert items == [{"id": uid(7), "userPrincipalName": "user7@contoso.example"}]
    raw(sim, "DELETE", f"/users/{uid(8)}")
    assert raw(sim, "DELETE", f"/directory/deletedItems/{uid(8)}").status == 204
    items, _ = rounds(sim, link)
    assert items == [{"id": uid(8), "@removed": {"reason": "deleted"}}]


def test_new_users_appear_in_the_next_round(sim: Simulator) -> None:
    """A user created after the deltaLink shows up in the next round."""
    _, link = rounds(sim, "/users/delta?$select=id,userPrincipalName")
    made = raw(sim, "POST", "/users", {"accountEnabled": True, "displayName": "Delta New", "mailNickname": "dn",
                                       "userPrincipalName": "deltanew@contoso.example",
                                       "passwordProfile": {"password": "S3cret!pass"}}).body
    items, _ = rounds(sim, link)
    assert items == [{"id": made["id"], "userPrincipalName": "deltanew@contoso.example"}]


def test_delta_token_latest_gives_only_a_delta_link(sim: Simulator) -> None:
    """$deltaToken=latest answers no users and a deltaLink from now on."""
    raw(sim, "PATCH", f"/users/{uid(9)}", {"userPrincipalName": "nine@fabrikam.example"})
    page = raw(sim, "GET", "/users/delta?$select=id,userPrincipalName&$deltaToken=latest").body
    assert page["value"] == [] and page["@odata.deltaLink"].startswith(sim.base_url)
    raw(sim, "PATCH", f"/users/{uid(10)}", {"userPrincipalName": "ten@fabrikam.example"})
    items, _ = rounds(sim, page["@odata.deltaLink"])
    assert [u["id"] for u in items] == [uid(10)]


def test_pages_stay_stable_while_users_change(sim: Simulator) -> None:
    """Changes made in the middle of a full round don't lose or duplicate anyone; they come in the next round."""
    first = raw(sim, "GET", "/users/delta?$select=id,userPrincipalName").body
    made = raw(sim, "POST", "/users", {"accountEnabled": True, "displayName": "Mid Round", "mailNickname": "mr",
                                       "userPrincipalName": "midround@contoso.example",
                                       "passwordProfile": {"password": "S3cret!pass"}}).body
    rest, link = rounds(sim, first["@odata.nextLink"])
    ids = [u["id"] for u in first["value"] + rest]
    assert len(ids) == len(set(ids)) and made["id"] not in ids
    assert made["id"] in {u["id"] for u in rounds(sim, link)[0]}


def test_invalidated_tokens_answer_410_with_a_resync_location(sim: Simulator) -> None:
    """After /_sim/delta/invalidate an old token answers 410 resyncRequired with Location to a full sync."""
    _, link = rounds(sim, "/users/delta?$select=id,userPrincipalName")
    sim.invalidate_delta()
    gone = raw(sim, "GET", link)
    assert gone.status == 410 and gone.body["error"]["code"] == "resyncRequired"
    location = gone.headers["Location"]
    assert location.startswith(sim.base_url + "/users/delta()?$select=id,userPrincipalName")
    items, _ = rounds(sim, location)
    assert len(items) >= 40


def test_expired_tokens_answer_410_sync_state_not_found(sim: Simulator) -> None:
    """A token older than delta_token_ttl_s (Graph: 7 days) answers 410 syncStateNotFound."""
    _, link = rounds(sim, "/users/delta?$select=id")
    sim.configure(delta_token_ttl_s=0.0)
    try:
        gone = raw(sim, "GET", link)
        assert gone.status == 410 and gone.body["error"]["code"] == "syncStateNotFound"
        assert gone.headers["Location"].startswith(sim.base_url + "/users/delta()")
    finally:
        sim.configure(delta_token_ttl_s=604800.0)


def test_delta_page_costs_one_ru_with_select_two_without(sim: Simulator) -> None:
    """A delta page costs 1 RU with $select (also on its nextLinks) and 2 without."""
    first = raw(sim, "GET", "/users/delta?$select=id")
    assert first.headers["x-ms-resource-unit"] == "1"
    assert raw(sim, "GET", first.body["@odata.nextLink"]).headers["x-ms-resource-unit"] == "1"
    assert raw(sim, "GET", "/users/delta").headers["x-ms-resource-unit"] == "2"


def test_unsupported_options_and_bad_tokens_are_400(sim: Simulator) -> None:
    """$orderby, filters other than id, and forged tokens are refused."""
    assert raw(sim, "GET", "/users/delta?$orderby=displayName").status == 400
    assert raw(sim, "GET", "/users/delta?$filter=startswith(displayName,'a')").status == 400
    assert raw(sim, "GET", "/users/delta()?$skiptoken=garbage").status == 400


def test_id_filter_limits_the_round(sim: Simulator) -> None:
    """$filter=id eq '…' (or-ed) tracks only those users."""
    flt = f"id%20eq%20'{uid(11)}'%20or%20id%20eq%20'{uid(12)}'"
    items, link = rounds(sim, f"/users/delta?$select=id,displayName&$filter={flt}")
    assert sorted(u["id"] for u in items) == [uid(11), uid(12)]
    raw(sim, "PATCH", f"/users/{uid(12)}", {"displayName": "Tracked"})
    raw(sim, "PATCH", f"/users/{uid(13)}", {"displayName": "Not tracked"})
    assert [u["id"] for u in rounds(sim, link)[0]] == [uid(12)]


@contextlib.contextmanager
def frozen_clock(sim: Simulator, **knobs: Any) -> Iterator[None]:
    """The simulator's clock frozen and `knobs` set for one test, both undone afterwards; the clock first
    moves past any visibility delay, so earlier tests' changes are all visible when the test starts."""
    before = {k: v for k, v in sim.configure().items() if k in knobs}
    sim.configure(**knobs)
    sim.clock(frozen=True, advance=knobs.get("delta_visibility_delay_s", 0.0))
    try:
        yield
    finally:
        sim.clock(frozen=False)
        sim.configure(**before)


def test_a_change_shows_only_once_it_is_older_than_the_visibility_delay(sim: Simulator) -> None:
    """With delta_visibility_delay_s, a round started too soon after a change leaves it out; a round
    started once the change is old enough on the simulator's clock returns it, once."""
    with frozen_clock(sim, delta_visibility_delay_s=30.0):
        _, link = rounds(sim, "/users/delta?$select=id,userPrincipalName")
        raw(sim, "PATCH", f"/users/{uid(14)}", {"userPrincipalName": "fourteen@fabrikam.example"})
        sim.clock(advance=29.0)
        items, link = rounds(sim, link)
        assert items == []
        sim.clock(advance=1.0)
        items, link = rounds(sim, link)
        assert items == [{"id": uid(14), "userPrincipalName": "fourteen@fabrikam.example"}]
        assert rounds(sim, link)[0] == []


def test_a_full_sync_and_latest_do_not_see_a_change_that_is_too_young(sim: Simulator) -> None:
    """A user created within the delay is missing from a full sync and from $deltaToken=latest's position,
    and both of their next rounds bring it once it is old enough."""
    with frozen_clock(sim, delta_visibility_delay_s=60.0):
        made = raw(sim, "POST", "/users", {"accountEnabled": True, "displayName": "Young", "mailNickname": "yg",
                                           "userPrincipalName": "young@contoso.example",
                                           "passwordProfile": {"password": "S3cret!pass"}}).body
        items, full_link = rounds(sim, "/users/delta?$select=id,userPrincipalName")
        assert made["id"] not in {u["id"] for u in items}
        latest = raw(sim, "GET", "/users/delta?$select=id,userPrincipalName&$deltaToken=latest").body
        sim.clock(advance=60.0)
        for link in (full_link, latest["@odata.deltaLink"]):
            assert [u["id"] for u in rounds(sim, link)[0]] == [made["id"]]


def test_replays_return_unchanged_users_again_and_pages_stay_stable(sim: Simulator) -> None:
    """delta_replay_rate returns about that share of the live users again in an incremental round, with
    their current values and the changed user among them; reading the same link again gives the same round."""
    with frozen_clock(sim, delta_replay_rate=0.2):
        _, link = rounds(sim, "/users/delta?$select=id,userPrincipalName")
        raw(sim, "PATCH", f"/users/{uid(15)}", {"userPrincipalName": "fifteen@fabrikam.example"})
        items, _ = rounds(sim, link)
        assert rounds(sim, link)[0] == items
        live = {u["id"]: u["userPrincipalName"] for u in rounds(sim, "/users/delta?$select=id,userPrincipalName")[0]}
        replayed = [u for u in items if u["id"] != uid(15)]
        assert {"id": uid(15), "userPrincipalName": "fifteen@fabrikam.example"} in items
        assert abs(len(items) - 1 - 0.2 * len(live)) <= 1 and replayed
        assert all(live[u["id"]] == u["userPrincipalName"] for u in items)   # current values, not stale ones


def test_delta_token_age_is_measured_on_the_simulator_clock(sim: Simulator) -> None:
    """A deltaLink older than delta_token_ttl_s on the simulator's clock answers 410 syncStateNotFound;
    the clock's Graph time moves with it."""
    with frozen_clock(sim):
        _, link = rounds(sim, "/users/delta?$select=id")
        before = sim.control("GET", "clock")
        moved = sim.clock(advance=7 * 24 * 3600 + 2)
        assert moved["frozen"] and moved["now"] - before["now"] == pytest.approx(7 * 24 * 3600 + 2)
        assert moved["utc"][:10] != before["utc"][:10]
        gone = raw(sim, "GET", link)
        assert gone.status == 410 and gone.body["error"]["code"] == "syncStateNotFound"


def _get(url: str) -> dict[str, Any]:
    req = urllib.request.Request(url, headers={"Authorization": "Bearer sim-token"})  # noqa: S310 (loopback)
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
        return json.loads(resp.read())


def test_hundred_thousand_users_full_round_and_bulk_rename() -> None:
    """A generated 100,000-user tenant serves a full delta round; a bulk rename shows up as exactly those users."""
    tenant = {"generate": {"users": 100_000, "passkeyRatio": 0.5, "domain": "contoso.example", "seed": 7},
              "simulator": {"throttle_enabled": False}}
    with start_simulator(tenant) as big:
        page = _get(big.base_url + "/users/delta?$select=id,userPrincipalName")
        ids: list[str] = []
        pages = 0
        while True:
            ids += [u["id"] for u in page["value"]]
            pages += 1
            if "@odata.deltaLink" in page:
                break
            page = _get(page["@odata.nextLink"])
        assert len(ids) == 100_000 and len(set(ids)) == 100_000 and pages == 500
        renames = [{"id": i, "userPrincipalName": f"moved{n}@fabrikam.example"} for n, i in enumerate(ids[::100])]
        assert big.control("POST", "users/bulk_rename", {"users": renames, "notify": False})["renamed"] == 1000
        page = _get(page["@odata.deltaLink"])
        changed = list(page["value"])
        while "@odata.nextLink" in page:
            page = _get(page["@odata.nextLink"])
            changed += page["value"]
        assert sorted(u["id"] for u in changed) == sorted(r["id"] for r in renames)
        assert all(u["userPrincipalName"].endswith("@fabrikam.example") for u in changed)
        assert 45_000 < big.control("GET", "health")["usersWithPasskeys"] < 55_000
