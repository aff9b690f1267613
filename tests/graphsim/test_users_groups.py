"""Users (list, paging, $select, $filter, get, PATCH, create, delete) and groups."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphServiceClient
from msgraph.generated.groups.item.group_item_request_builder import GroupItemRequestBuilder
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.password_profile import PasswordProfile
from msgraph.generated.models.user import User
from msgraph.generated.users.users_request_builder import UsersRequestBuilder

from graphsim.launcher import Simulator
from tests.graphsim.conftest import base_tenant, no_retry, raw, start, uid, user

PILOT = "99999999-0000-4000-8000-000000000001"
MARKETING = "99999999-0000-4000-8000-000000000002"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """250 users (more than two default pages), a few on fabrikam, one synced from on-premises."""
    tenant = base_tenant(240)
    tenant["users"] += [user(n, domain="fabrikam.example") for n in range(241, 250)]
    tenant["users"].append(user(250, onPremisesSyncEnabled=True))
    yield from start(tenant)


def _query(**kw: object) -> RequestConfiguration[UsersRequestBuilder.UsersRequestBuilderGetQueryParameters]:
    return RequestConfiguration(query_parameters=UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(**kw),
                                options=[RetryHandlerOption(max_retries=0)])


async def test_sdk_follows_next_links_on_own_host(client: GraphServiceClient, sim: Simulator) -> None:
    """Pages carry @odata.nextLink on the simulator's own host; the SDK follows them to every match once."""
    page = await client.users.get(_query(select=["id", "userPrincipalName"], top=5,
                                         filter="startswith(userPrincipalName,'user24')"))
    assert len(page.value) == 5 and page.odata_next_link.startswith(sim.base_url + "/users?")
    seen = [u.user_principal_name for u in page.value]
    while page.odata_next_link:
        page = await client.users.with_url(page.odata_next_link).get(request_configuration=no_retry())
        seen += [u.user_principal_name for u in page.value]
    assert sorted(seen) == sorted(["user24@contoso.example"] + [f"user{n}@contoso.example" for n in range(240, 241)]
                                  + [f"user{n}@fabrikam.example" for n in range(241, 250)])
    assert page.value[0].display_name is None                  # not selected


def test_default_page_is_100_and_pages_cover_everyone(sim: Simulator) -> None:
    """Without $top a page holds 100 users; following nextLink yields all 250 exactly once."""
    page = raw(sim, "GET", "/users?$select=id").body
    assert len(page["value"]) == 100
    seen = [u["id"] for u in page["value"]]
    while "@odata.nextLink" in page:
        page = raw(sim, "GET", page["@odata.nextLink"]).body
        seen += [u["id"] for u in page["value"]]
    assert len(seen) == 250 and len(set(seen)) == 250


def test_top_bounds_and_select_shape(sim: Simulator) -> None:
    """$top up to 999 sets the page size; 1000 is a 400; $select returns exactly the selected keys."""
    page = raw(sim, "GET", "/users?$top=999&$select=id,accountEnabled").body
    assert len(page["value"]) == 250 and "@odata.nextLink" not in page
    assert set(page["value"][0]) == {"id", "accountEnabled"}
    assert raw(sim, "GET", "/users?$top=1000").status == 400
    assert raw(sim, "GET", "/users?$select=id,noSuchProperty").status == 400


def test_filters_by_id(sim: Simulator) -> None:
    """id eq and id in filters find exactly those users."""
    one = raw(sim, "GET", f"/users?$filter=id%20eq%20'{uid(7)}'").body["value"]
    assert [u["id"] for u in one] == [uid(7)]
    many = raw(sim, "GET", f"/users?$filter=id%20in%20('{uid(1)}','{uid(2)}','{uid(3)}')&$select=id").body["value"]
    assert sorted(u["id"] for u in many) == [uid(1), uid(2), uid(3)]


async def test_startswith_filter_through_the_sdk(client: GraphServiceClient) -> None:
    """startswith(userPrincipalName,'user24') is a normal query."""
    page = await client.users.get(_query(filter="startswith(userPrincipalName,'user24')", select=["id"]))
    assert len(page.value) == 11                               # user24, user240..user249


async def test_endswith_needs_advanced_query(client: GraphServiceClient) -> None:
    """endswith() is refused without ConsistencyLevel: eventual and $count=true, and works with them."""
    with pytest.raises(ODataError) as info:
        await client.users.get(_query(filter="endswith(userPrincipalName,'@fabrikam.example')"))
    assert info.value.response_status_code == 400
    config = _query(filter="endswith(userPrincipalName,'@fabrikam.example')", count=True, select=["id"])
    config.headers.add("ConsistencyLevel", "eventual")
    page = await client.users.get(config)
    assert page.odata_count == 9 and len(page.value) == 9


def test_get_by_upn_and_key_forms(sim: Simulator) -> None:
    """A user can be read by id, by UPN and in the users('…') key form."""
    assert raw(sim, "GET", "/users/user7@contoso.example?$select=id").body["id"] == uid(7)
    assert raw(sim, "GET", "/users('user8@contoso.example')?$select=id").body["id"] == uid(8)
    assert raw(sim, "GET", f"/users('{uid(9)}')?$select=id").body["id"] == uid(9)


async def test_patch_upn_then_old_upn_is_gone(client: GraphServiceClient, sim: Simulator) -> None:
    """PATCH userPrincipalName answers 204; the user is found under the new UPN only."""
    await client.users.by_user_id(uid(10)).patch(User(user_principal_name="ten@fabrikam.example"),
                                                 request_configuration=no_retry())
    assert raw(sim, "GET", "/users/ten@fabrikam.example?$select=id").body["id"] == uid(10)
    assert raw(sim, "GET", "/users/user10@contoso.example").status == 404


async def test_upn_conflict_is_400(client: GraphServiceClient) -> None:
    """Taking another user's UPN is refused with Graph's 400."""
    with pytest.raises(ODataError) as info:
        await client.users.by_user_id(uid(11)).patch(User(user_principal_name="USER12@contoso.example"),
                                                     request_configuration=no_retry())
    assert info.value.response_status_code == 400
    assert "already exists" in info.value.error.message


def test_patch_validation(sim: Simulator) -> None:
    """Read-only, unknown and badly typed properties are refused; synced users keep their UPN."""
    assert raw(sim, "PATCH", f"/users/{uid(13)}", {"id": uid(14)}).status == 400
    assert raw(sim, "PATCH", f"/users/{uid(13)}", {"favouriteColour": "blue"}).status == 400
    assert raw(sim, "PATCH", f"/users/{uid(13)}", {"accountEnabled": "no"}).status == 400
    assert raw(sim, "PATCH", f"/users/{uid(13)}", {"userPrincipalName": "no-at-sign"}).status == 400
    assert raw(sim, "PATCH", f"/users/{uid(250)}", {"userPrincipalName": "x@contoso.example"}).status == 400
    assert raw(sim, "PATCH", f"/users/{uid(250)}", {"accountEnabled": False}).status == 204


async def test_create_and_soft_delete_a_user(client: GraphServiceClient, sim: Simulator) -> None:
    """POST /users needs the documented properties (201); DELETE soft-deletes (204), then GET is 404."""
    made = await client.users.post(User(account_enabled=True, display_name="New Hire", mail_nickname="newhire",
                                        user_principal_name="newhire@contoso.example",
                                        password_profile=PasswordProfile(password="S3cret!pass")),
                                   request_configuration=no_retry())
    assert made.id and made.user_principal_name == "newhire@contoso.example"
    assert raw(sim, "POST", "/users", {"displayName": "Incomplete"}).status == 400
    await client.users.by_user_id(made.id).delete(request_configuration=no_retry())
    assert raw(sim, "GET", f"/users/{made.id}").status == 404
    assert raw(sim, "GET", f"/directory/deletedItems/{made.id}").body["id"] == made.id


async def test_group_security_flags_through_the_sdk(client: GraphServiceClient, sim: Simulator) -> None:
    """GET /groups/{id} with $select exposes securityEnabled, mailEnabled and groupTypes."""
    params = GroupItemRequestBuilder.GroupItemRequestBuilderGetQueryParameters(
        select=["id", "displayName", "securityEnabled", "groupTypes"])
    pilot = await client.groups.by_group_id(PILOT).get(RequestConfiguration(query_parameters=params))
    assert pilot.security_enabled is True and pilot.group_types == []
    m365 = raw(sim, "GET", f"/groups/{MARKETING}?$select=securityEnabled,mailEnabled,groupTypes").body
    assert m365["securityEnabled"] is False and m365["mailEnabled"] is True and m365["groupTypes"] == ["Unified"]
    assert raw(sim, "GET", "/groups/99999999-0000-4000-8000-00000000dead").status == 404
    listed = raw(sim, "GET", "/groups?$filter=securityEnabled%20eq%20true&$select=id").body["value"]
    assert [g["id"] for g in listed] == [PILOT]


def test_users_list_costs_two_ru_and_select_one(sim: Simulator) -> None:
    """GET /users costs 2 RU, 1 with $select; a single user 1 RU."""
    assert raw(sim, "GET", "/users").headers["x-ms-resource-unit"] == "2"
    assert raw(sim, "GET", "/users?$select=id").headers["x-ms-resource-unit"] == "1"
    assert raw(sim, "GET", f"/users/{uid(1)}").headers["x-ms-resource-unit"] == "1"
