"""Service principals by appId and users by id with $select: the reads a plan uses to name CA targets."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.service_principals_with_app_id.service_principals_with_app_id_request_builder import (
    ServicePrincipalsWithAppIdRequestBuilder,
)

from graphsim.launcher import Simulator
from tests.graphsim.conftest import base_tenant, raw, start, uid

PAYROLL = "9e1d0b4c-1111-4a2b-8c3d-000000000001"
PAYROLL_SP = "5a6b7c8d-2222-4a2b-8c3d-000000000001"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A small tenant with one enterprise application."""
    yield from start(base_tenant(3, servicePrincipals=[
        {"id": PAYROLL_SP, "appId": PAYROLL, "displayName": "Payroll", "servicePrincipalType": "Application"}]))


async def test_service_principal_by_app_id_through_the_sdk(client: GraphServiceClient, sim: Simulator) -> None:
    """GET /servicePrincipals(appId='{appId}') with $select answers the app's name, as the SDK asks for it."""
    params = ServicePrincipalsWithAppIdRequestBuilder.ServicePrincipalsWithAppIdRequestBuilderGetQueryParameters(
        select=["appId", "displayName"])
    found = await client.service_principals_with_app_id(PAYROLL).get(RequestConfiguration(query_parameters=params))
    assert found is not None and found.display_name == "Payroll" and found.app_id == PAYROLL
    with pytest.raises(ODataError) as err:
        await client.service_principals_with_app_id("00000000-0000-4000-8000-00000000dead").get()
    assert err.value.response_status_code == 404


def test_service_principal_raw_shape_and_404(sim: Simulator) -> None:
    """The raw answer carries only the selected fields and Graph's context; an unknown appId is Graph's 404."""
    got = raw(sim, "GET", f"/servicePrincipals(appId='{PAYROLL}')?$select=appId,displayName")
    assert got.status == 200
    assert {k: v for k, v in got.body.items() if not k.startswith("@")} == {
        "id": PAYROLL_SP, "appId": PAYROLL, "displayName": "Payroll"}   # id always comes back, as Graph's does
    assert "/$metadata#servicePrincipals(" in got.body["@odata.context"]
    by_id = raw(sim, "GET", f"/servicePrincipals/{PAYROLL_SP}")
    assert by_id.status == 200 and by_id.body["appId"] == PAYROLL
    missing = raw(sim, "GET", "/servicePrincipals(appId='00000000-0000-4000-8000-00000000dead')")
    assert missing.status == 404 and missing.body["error"]["code"] == "Request_ResourceNotFound"


def test_user_by_id_with_select(sim: Simulator) -> None:
    """GET /users/{id}?$select=id,displayName,userPrincipalName answers just those (the plan's name read)."""
    got = raw(sim, "GET", f"/users/{uid(1)}?$select=id,displayName,userPrincipalName").body
    assert set(got) - {"@odata.context"} == {"id", "displayName", "userPrincipalName"}


def test_without_application_read_the_read_is_denied() -> None:
    """With `application_read_granted` off, Graph's 403 Authorization_RequestDenied answers the read."""
    for sim in start(base_tenant(1, servicePrincipals=[{"id": PAYROLL_SP, "appId": PAYROLL, "displayName": "P"}],
                                 simulator={"application_read_granted": False})):
        got = raw(sim, "GET", f"/servicePrincipals(appId='{PAYROLL}')?$select=appId,displayName")
        assert got.status == 403 and got.body["error"]["code"] == "Authorization_RequestDenied"
