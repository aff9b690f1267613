"""Subscriptions on users: validation handshake, limits, notifications with clientState, lifecycle events."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

import pytest
from msgraph import GraphServiceClient
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.models.user import User

from graphsim.launcher import Simulator
from tests.graphsim.conftest import Receiver, araw, base_tenant, no_retry, start, uid

TENANT_ID = "11111111-1111-4111-8111-111111111111"
SECRET = "client-state-secret"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A small tenant with a short notification batching window."""
    yield from start(base_tenant(30))


def _sub(url: str, minutes: float = 120, **kw: object) -> Subscription:
    return Subscription(change_type="updated,deleted", notification_url=url, resource="users",
                        expiration_date_time=datetime.now(UTC) + timedelta(minutes=minutes),
                        client_state=SECRET, **kw)


async def _create(client: GraphServiceClient, sub: Subscription) -> Subscription:
    return await client.subscriptions.post(sub, request_configuration=no_retry())


async def test_handshake_echoes_the_decoded_token_and_creates(client: GraphServiceClient,
                                                               receiver: Receiver) -> None:
    """Creation POSTs a URL-encoded validationToken; echoing it (200 text/plain) gives a 201 subscription."""
    made = await _create(client, _sub(receiver.url))
    try:
        assert made.id and made.client_state == SECRET and made.resource == "users"
        assert len(receiver.validations) == 1
        assert " " in receiver.validations[0] and unquote(receiver.validations[0]) == receiver.validations[0]
    finally:
        await client.subscriptions.by_subscription_id(made.id).delete(request_configuration=no_retry())


async def test_failed_handshake_is_400_validation_error(client: GraphServiceClient, receiver: Receiver) -> None:
    """An endpoint that doesn't echo the token makes creation fail with 400 ValidationError."""
    receiver.echo = False
    with pytest.raises(ODataError) as info:
        await _create(client, _sub(receiver.url))
    assert info.value.response_status_code == 400 and info.value.error.code == "ValidationError"


async def test_lifetime_limits(client: GraphServiceClient, receiver: Receiver) -> None:
    """Past 41,760 minutes is a 400; under 45 minutes is raised to 45."""
    with pytest.raises(ODataError) as info:
        await _create(client, _sub(receiver.url, minutes=41_761))
    assert info.value.response_status_code == 400
    made = await _create(client, _sub(receiver.url, minutes=5))
    try:
        assert made.expiration_date_time >= datetime.now(UTC) + timedelta(minutes=44)
    finally:
        await client.subscriptions.by_subscription_id(made.id).delete(request_configuration=no_retry())


@pytest.mark.parametrize(("field", "value"), [
    ("change_type", "updated,renamed"), ("resource", "groups"), ("client_state", "x" * 129),
    ("notification_url", "http://example.com/notify"), ("notification_url", "https://example.com/notify")])
async def test_invalid_subscriptions_are_400(client: GraphServiceClient, receiver: Receiver, field: str,
                                             value: str) -> None:
    """Bad changeType, resource, a too-long clientState and non-loopback URLs are refused before any call."""
    sub = _sub(receiver.url)
    setattr(sub, field, value)
    with pytest.raises(ODataError) as info:
        await _create(client, sub)
    assert info.value.response_status_code == 400
    assert receiver.validations == []


async def test_upn_change_notifies_with_client_state(client: GraphServiceClient, sim: Simulator,
                                                     receiver: Receiver) -> None:
    """A UPN PATCH through the SDK sends an 'updated' notification with clientState and only the user's id."""
    made = await _create(client, _sub(receiver.url))
    try:
        await client.users.by_user_id(uid(4)).patch(User(user_principal_name="four@fabrikam.example"),
                                                    request_configuration=no_retry())
        notes = await receiver.wait_for(subscriptionId=made.id)
        assert len(notes) == 1
        note = notes[0]
        assert note["changeType"] == "updated" and note["clientState"] == SECRET and note["tenantId"] == TENANT_ID
        assert note["resource"] == f"Users/{uid(4)}"
        assert note["resourceData"] == {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{uid(4)}",
                                        "id": uid(4), "organizationId": TENANT_ID}
    finally:
        await client.subscriptions.by_subscription_id(made.id).delete(request_configuration=no_retry())


async def test_many_changes_are_batched_per_post(client: GraphServiceClient, sim: Simulator,
                                                 receiver: Receiver) -> None:
    """A bulk rename of 30 users arrives as notifications batched into POSTs of at most notify_max_per_post."""
    sim.configure(notify_max_per_post=8)
    made = await _create(client, _sub(receiver.url))
    try:
        renamed = (await asyncio.to_thread(sim.bulk_rename, "contoso.example", "northwind.example"))["renamed"]
        assert renamed > 20
        assert len(await receiver.wait_for(renamed, subscriptionId=made.id)) == renamed
        assert max(len(body["value"]) for body in receiver.received) <= 8
    finally:
        sim.configure(notify_max_per_post=100)
        await client.subscriptions.by_subscription_id(made.id).delete(request_configuration=no_retry())


async def test_single_user_resource_and_deleted_change_type(client: GraphServiceClient, sim: Simulator,
                                                            receiver: Receiver) -> None:
    """users/{id} only hears about that user; a permanent delete is 'deleted', a soft delete 'updated'."""
    made = await _create(client, Subscription(
        change_type="updated,deleted", notification_url=receiver.url, resource=f"users/{uid(20)}",
        expiration_date_time=datetime.now(UTC) + timedelta(hours=2), client_state=SECRET))
    try:
        sim.configure(notify_paused=True)  # held, then sent together: their order cannot race across POSTs
        await araw(sim, "PATCH", f"/users/{uid(21)}", {"displayName": "Someone else"})
        await araw(sim, "DELETE", f"/users/{uid(20)}")
        await araw(sim, "DELETE", f"/directory/deletedItems/{uid(20)}")
        sim.configure(notify_paused=False)
        await receiver.wait_for(changeType="deleted")
        notes = receiver.notifications(subscriptionId=made.id)
        assert [(n["resourceData"]["id"], n["changeType"]) for n in notes] == [(uid(20), "updated"),
                                                                                (uid(20), "deleted")]
    finally:
        sim.configure(notify_paused=False)
        await client.subscriptions.by_subscription_id(made.id).delete(request_configuration=no_retry())


async def test_renew_reauthorize_list_and_delete(client: GraphServiceClient, receiver: Receiver) -> None:
    """PATCH renews the expiry (200), reauthorize is 204, the app lists its subscriptions, DELETE ends it."""
    made = await _create(client, _sub(receiver.url))
    item = client.subscriptions.by_subscription_id(made.id)
    later = datetime.now(UTC) + timedelta(days=20)
    renewed = await item.patch(Subscription(expiration_date_time=later), request_configuration=no_retry())
    assert abs((renewed.expiration_date_time - later).total_seconds()) < 1
    await item.reauthorize.post(request_configuration=no_retry())
    listed = await client.subscriptions.get(request_configuration=no_retry())
    assert made.id in [s.id for s in listed.value]
    with pytest.raises(ODataError):
        await item.patch(Subscription(notification_url=receiver.url), request_configuration=no_retry())
    await item.delete(request_configuration=no_retry())
    with pytest.raises(ODataError) as info:
        await item.get(request_configuration=no_retry())
    assert info.value.response_status_code == 404


async def test_duplicate_subscription_is_409(client: GraphServiceClient, receiver: Receiver) -> None:
    """The same resource, changeType and URL twice is a conflict."""
    made = await _create(client, _sub(receiver.url))
    try:
        with pytest.raises(ODataError) as info:
            await _create(client, _sub(receiver.url))
        assert info.value.response_status_code == 409
    finally:
        await client.subscriptions.by_subscription_id(made.id).delete(request_configuration=no_retry())


async def test_lifecycle_notification_goes_to_the_lifecycle_url(client: GraphServiceClient, sim: Simulator,
                                                                receiver: Receiver) -> None:
    """/_sim/subscriptions/{id}/lifecycle sends reauthorizationRequired to lifecycleNotificationUrl with clientState."""
    made = await _create(client, _sub(receiver.url, lifecycle_notification_url=receiver.url + "/lifecycle"))
    try:
        assert len(receiver.validations) == 2                    # both URLs were validated
        await asyncio.to_thread(sim.lifecycle, made.id, "reauthorizationRequired")
        notes = await receiver.wait_for(lifecycleEvent="reauthorizationRequired")
        assert notes == [{"subscriptionId": made.id, "subscriptionExpirationDateTime": notes[0][
            "subscriptionExpirationDateTime"], "tenantId": TENANT_ID, "clientState": SECRET,
            "lifecycleEvent": "reauthorizationRequired"}]
    finally:
        await client.subscriptions.by_subscription_id(made.id).delete(request_configuration=no_retry())


async def test_drop_pause_and_retry_knobs(client: GraphServiceClient, sim: Simulator, receiver: Receiver) -> None:
    """Dropped notifications never arrive; paused ones wait; a failing endpoint is retried until it answers."""
    made = await _create(client, _sub(receiver.url))
    try:
        sim.configure(notify_drop_rate=1.0)
        await araw(sim, "PATCH", f"/users/{uid(22)}", {"displayName": "Lost"})
        sim.configure(notify_drop_rate=0.0, notify_paused=True)
        await araw(sim, "PATCH", f"/users/{uid(23)}", {"displayName": "Held"})
        # Both changes are settled when the PATCHes return: the first dropped, the second queued and held.
        stats = await asyncio.to_thread(sim.stats)
        assert stats["notifications"]["dropped"] >= 1 and stats["notifications_pending"] == 1
        assert receiver.notifications(subscriptionId=made.id) == []
        receiver.status = 503
        sim.configure(notify_paused=False, notify_retry_backoff_s=0.2, notify_retry_count=6)
        await receiver.wait_until(lambda: receiver.rejected >= 1)  # the first delivery met the failing endpoint
        receiver.status = 202
        notes = await receiver.wait_for(subscriptionId=made.id, within=30.0)
        assert [n["resourceData"]["id"] for n in notes] == [uid(23)]
        stats = sim.stats()["notifications"]
        assert stats["dropped"] >= 1 and stats["retries"] >= 1 and receiver.rejected >= 1
    finally:
        sim.configure(notify_retry_backoff_s=0.5, notify_retry_count=3, notify_paused=False, notify_drop_rate=0.0)
        await client.subscriptions.by_subscription_id(made.id).delete(request_configuration=no_retry())
