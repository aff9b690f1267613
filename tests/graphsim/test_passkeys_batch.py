"""Users' passkeys (fido2Methods) and JSON batching."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kiota_abstractions.authentication.base_bearer_token_authentication_provider import (
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.method import Method
from kiota_abstractions.request_information import RequestInformation
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph_core.requests.batch_request_content import BatchRequestContent
from msgraph_core.requests.batch_request_item import BatchRequestItem

from graphsim.launcher import Simulator
from tests.graphsim.conftest import (
    ANDROID,
    FEITIAN,
    TOKEN,
    YUBI,
    StaticTokenProvider,
    base_tenant,
    frozen_throttle_clock,
    no_retry,
    raw,
    start,
    uid,
)


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """60 users, every third with a YubiKey."""
    yield from start(base_tenant(60))


@pytest.fixture(autouse=True)
def full_buckets(sim: Simulator) -> None:
    """Each test starts with the tenant's buckets full, as after a quiet spell: the authentication-method
    limit (6 calls a second) is spent by a few reads, and one test's reads must not throttle the next's."""
    sim.control("POST", "throttle/reset")


async def send_batch(client: GraphServiceClient, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """A hand-built $batch through the SDK's adapter (sends dependsOn and relative URLs as written)."""
    ri = RequestInformation(Method.POST, "{+baseurl}/$batch")
    ri.headers.try_add("Accept", "application/json")
    ri.set_stream_content(json.dumps({"requests": requests}).encode(), "application/json")
    answer = await client.request_adapter.send_primitive_async(ri, "bytes", {"XXX": ODataError})
    return json.loads(answer)


def _reads(ids: list[int]) -> list[dict[str, Any]]:
    return [{"id": str(n), "method": "GET", "url": f"/users/{uid(n)}/authentication/fido2Methods"} for n in ids]


# ------------------------------------------------------------------ passkeys
async def test_sdk_lists_gets_and_deletes_a_passkey(client: GraphServiceClient, sim: Simulator) -> None:
    """List a user's passkeys, read one, delete it (204); the list is then empty."""
    methods = client.users.by_user_id(uid(3)).authentication.fido2_methods
    listed = await methods.get(request_configuration=no_retry())
    assert len(listed.value) == 1
    key = listed.value[0]
    assert key.aa_guid == YUBI and key.created_date_time is not None and key.model == "YubiKey 5 NFC"
    one = await methods.by_fido2_authentication_method_id(key.id).get(request_configuration=no_retry())
    assert one.id == key.id
    await methods.by_fido2_authentication_method_id(key.id).delete(request_configuration=no_retry())
    assert raw(sim, "GET", f"/users/{uid(3)}/authentication/fido2Methods").body["value"] == []
    assert raw(sim, "DELETE", f"/users/{uid(3)}/authentication/fido2Methods/{key.id}").status == 404


def test_passkey_fields_are_graphs(sim: Simulator) -> None:
    """Each method carries exactly Graph's documented fields (createdDateTime, not creationDateTime)."""
    key = raw(sim, "GET", f"/users/{uid(6)}/authentication/fido2Methods").body["value"][0]
    assert set(key) == {"id", "displayName", "createdDateTime", "aaGuid", "model", "attestationCertificates",
                        "attestationLevel", "passkeyType"}


def test_registering_a_passkey_through_the_control_endpoint(sim: Simulator) -> None:
    """/_sim/users/{id}/fido2Methods adds a passkey with a server id and time, visible to Graph reads."""
    made = sim.register_passkey(uid(4), aaGuid=ANDROID, model="Microsoft Authenticator - Android",
                                displayName="Pixel", passkeyType="deviceBound")
    assert made["id"] and made["createdDateTime"]
    listed = raw(sim, "GET", f"/users/{uid(4)}/authentication/fido2Methods").body["value"]
    assert [m["aaGuid"] for m in listed] == [ANDROID]
    with pytest.raises(RuntimeError, match="400"):
        sim.register_passkey(uid(4), aaGuid="not-a-guid")


def test_passkeys_of_unknown_users_are_404(sim: Simulator) -> None:
    """A user that doesn't exist has no passkey collection."""
    assert raw(sim, "GET", "/users/00000000-dead-4bad-8bad-000000000000/authentication/fido2Methods").status == 404


# ------------------------------------------------------------------ $batch
async def test_batch_of_twenty_reads_answers_each_by_id(client: GraphServiceClient, sim: Simulator) -> None:
    """20 fido2Methods reads in one $batch: each answered with its own status and body, matched by id."""
    # The authentication-method limit would refuse 14 of the 20 (its own tests are test_auth_methods_limit.py);
    # here it is off so every item shows its body.
    sim.configure(auth_methods_rps=0.0)
    sim.reset_stats()
    try:
        answer = await send_batch(client, _reads(list(range(41, 61))))
    finally:
        sim.configure(auth_methods_rps=6.0)
    by_id = {r["id"]: r for r in answer["responses"]}
    assert set(by_id) == {str(n) for n in range(41, 61)}
    assert all(r["status"] == 200 for r in by_id.values())
    assert by_id["42"]["body"]["value"][0]["aaGuid"] == YUBI and by_id["43"]["body"]["value"] == []
    stats = sim.stats()
    assert stats["resource_units"] == 20 and stats["batch"] == {"requests": 1, "items": 20}


async def test_sdk_batch_client_and_the_absolute_url_trap(sim: Simulator) -> None:
    """msgraph-core's batch works with a fresh client; after users.delta.get() its item URLs turn absolute and
    Graph (and so the simulator) answers each item 400 (graph-contract.md pitfall 5)."""
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(StaticTokenProvider(TOKEN, ["127.0.0.1"])))
    adapter.base_url = sim.base_url
    fresh = GraphServiceClient(request_adapter=adapter)

    async def statuses() -> list[int]:
        content = BatchRequestContent()
        for n in (7, 8, 9):
            ri = fresh.users.by_user_id(uid(n)).authentication.fido2_methods.to_get_request_information()
            content.add_request(str(n), BatchRequestItem(request_information=ri))
        answer = await fresh.batch.post(content)
        return sorted(r.status for r in answer.responses.values())

    assert await statuses() == [200, 200, 200]
    await fresh.users.delta.get(request_configuration=no_retry())
    assert await statuses() == [400, 400, 400]


def test_batch_limits_and_ids(sim: Simulator) -> None:
    """Over 20 requests, duplicate ids and a body without Content-Type are refused as a whole."""
    assert raw(sim, "POST", "/$batch", {"requests": _reads(list(range(1, 22)))}).status == 400
    dup = _reads([1, 2])
    dup[1]["id"] = "1"
    assert raw(sim, "POST", "/$batch", {"requests": dup}).status == 400
    patch = [{"id": "1", "method": "PATCH", "url": f"/users/{uid(1)}", "body": {"displayName": "x"}}]
    assert raw(sim, "POST", "/$batch", {"requests": patch}).status == 400


def test_batch_urls_relative_with_or_without_slash_and_absolute_refused(sim: Simulator) -> None:
    """Item URLs are relative to the version; absolute URLs get a per-item 400 as on Graph (unless the knob)."""
    reqs = [{"id": "a", "method": "GET", "url": f"users/{uid(1)}?$select=id"},
            {"id": "b", "method": "GET", "url": f"{sim.base_url}/users/{uid(1)}?$select=id"},
            {"id": "c", "method": "GET", "url": f"/v1.0/users/{uid(1)}?$select=id"}]
    by_id = {r["id"]: r for r in raw(sim, "POST", "/$batch", {"requests": reqs}).body["responses"]}
    assert by_id["a"]["status"] == 200 and by_id["a"]["body"]["id"] == uid(1)
    assert by_id["b"]["status"] == 400 and by_id["c"]["status"] == 400
    sim.configure(batch_allow_absolute_urls=True)
    try:
        by_id = {r["id"]: r for r in raw(sim, "POST", "/$batch", {"requests": reqs}).body["responses"]}
        assert by_id["b"]["status"] == 200
    finally:
        sim.configure(batch_allow_absolute_urls=False)


async def test_depends_on_runs_in_order_and_failed_dependency_is_424(client: GraphServiceClient,
                                                                      sim: Simulator) -> None:
    """With dependsOn the items run in sequence; an item after a failed one gets 424."""
    reqs = [{"id": "1", "method": "PATCH", "url": f"/users/{uid(20)}", "headers": {"Content-Type": "application/json"},
             "body": {"displayName": "Sequenced"}},
            {"id": "2", "method": "GET", "url": f"/users/{uid(20)}?$select=displayName", "dependsOn": ["1"]},
            {"id": "3", "method": "GET", "url": "/users/00000000-dead-4bad-8bad-000000000000", "dependsOn": ["2"]},
            {"id": "4", "method": "GET", "url": f"/users/{uid(21)}", "dependsOn": ["3"]}]
    by_id = {r["id"]: r for r in (await send_batch(client, reqs))["responses"]}
    assert by_id["1"]["status"] == 204 and "body" not in by_id["1"]
    assert by_id["2"]["body"]["displayName"] == "Sequenced"
    assert by_id["3"]["status"] == 404 and by_id["4"]["status"] == 424


async def test_batch_items_are_throttled_one_by_one(client: GraphServiceClient, sim: Simulator) -> None:
    """With a 5-RU bucket, a 20-read batch is an outer 200 holding 5 answers and 15 item 429s with Retry-After."""
    sim.configure(throttle_capacity_ru=5, throttle_refill_ru_per_s=0.5, throttle_charge_rejected=False)
    try:
        with frozen_throttle_clock(sim):  # no refill while the batch runs, however long it takes
            answer = await send_batch(client, _reads(list(range(1, 21))))
        statuses = sorted(r["status"] for r in answer["responses"])
        assert statuses == [200] * 5 + [429] * 15
        throttled = [r for r in answer["responses"] if r["status"] == 429]
        assert all(int(r["headers"]["Retry-After"]) >= 1 for r in throttled)
        assert throttled[0]["headers"]["x-ms-throttle-information"] == "ResourceUnitLimitExceeded"
    finally:
        sim.configure(throttle_capacity_ru=8000, throttle_refill_ru_per_s=800, throttle_charge_rejected=True)


def test_feitian_and_ios_keys_round_trip(sim: Simulator) -> None:
    """Registered keys of other makers come back with their AAGUIDs unchanged."""
    for aaguid in (FEITIAN, "90a3ccdf-635c-4729-a248-9b709135078f"):
        sim.register_passkey(uid(5), aaGuid=aaguid, model="x")
    listed = raw(sim, "GET", f"/users/{uid(5)}/authentication/fido2Methods").body["value"]
    assert [m["aaGuid"] for m in listed] == [FEITIAN, "90a3ccdf-635c-4729-a248-9b709135078f"]
