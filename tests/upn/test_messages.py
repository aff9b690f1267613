"""The upn-changes queue's messages: at most 20 users each, and what the webhooks queue (each user once, by
source, stamped with the tenant) without calling Graph."""
from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shared.upn.intake import ChangeNotice, LifecycleEvent
from shared.upn.messages import USERS_PER_MESSAGE, chunk_users, enqueue_lifecycle, enqueue_notices, users_message
from tests.e2e.stack import running_stack, tenant, uid, user


def _notice(n: int, source: str = "notification") -> ChangeNotice:
    return ChangeNotice(user_id=uid(n), change_type="updated", subscription_id=None, tenant_id="t", resource="users",
                        source=source)


@pytest.mark.parametrize("count", [0, USERS_PER_MESSAGE + 1])
def test_a_users_message_carries_one_to_twenty_users(count: int) -> None:
    """No message is empty, none holds more than one $batch of users (the model refuses it at the producer)."""
    with pytest.raises(ValidationError, match="users"):
        users_message([{"id": uid(n)} for n in range(count)], source="sweep")


def test_a_users_message_names_the_ticket_and_old_upn_only_when_given() -> None:
    """Version, kind, source, users and the time it was made; ticketId and oldUpn only from a ticket."""
    plain = users_message([{"id": uid(1)}], source="notification")
    assert set(plain) == {"v", "kind", "source", "users", "at"} and plain["at"].endswith("Z")
    ticket = users_message([{"id": uid(1)}], source="ticket", ticket_id="INC-1", old_upn="a@contoso.example")
    assert (ticket["ticketId"], ticket["oldUpn"]) == ("INC-1", "a@contoso.example")


def test_users_are_chunked_twenty_a_message_in_order() -> None:
    """45 users make messages of 20, 20 and 5, keeping their order."""
    messages = chunk_users([{"id": uid(n)} for n in range(45)], source="sweep")
    assert [len(m["users"]) for m in messages] == [20, 20, 5]
    assert [u["id"] for m in messages for u in m["users"]] == [uid(n) for n in range(45)]


async def _queued(stack: Any) -> list[dict[str, Any]]:
    return [m.body for m in await stack.services.store.queue.receive(32, visibility_timeout=60)]


async def test_notices_queue_each_user_once_by_source_stamped_with_the_tenant(azurite):
    """Replayed notices of one user count once; Event Grid and webhook notices go in their own messages; each
    message names the tenant it belongs to."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await stack.services.store.queue.clear()
        count = await enqueue_notices(stack.services, [_notice(1), _notice(1), _notice(2, "eventgrid"), _notice(3)])
        assert count == 3
        messages = sorted(await _queued(stack), key=lambda m: m["source"])
        assert [(m["source"], [u["id"] for u in m["users"]]) for m in messages] == [
            ("eventgrid", [uid(2)]), ("notification", [uid(1), uid(3)])]
        assert {m["tenant"] for m in messages} == {stack.tenant_id}
        assert stack.sim.stats()["http_requests"] == 0  # queueing never calls Graph


async def test_lifecycle_events_are_queued_as_lifecycle_work(azurite):
    """Each lifecycle event becomes one `lifecycle` message naming the event and the subscription."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await stack.services.store.queue.clear()
        event = LifecycleEvent(event="missed", subscription_id="sub-1", tenant_id=stack.tenant_id)
        assert await enqueue_lifecycle(stack.services, [event]) == 1
        (message,) = await _queued(stack)
        assert {k: message[k] for k in ("kind", "event", "subscriptionId", "tenant")} == {
            "kind": "lifecycle", "event": "missed", "subscriptionId": "sub-1", "tenant": stack.tenant_id}
