"""The queue trigger's dispatch: a message goes by kind to the processor or lifecycle handling;
another tenant's is dropped; an unreadable one is an InputError (the poison queue at once); a throttled one
is queued again for later."""
from __future__ import annotations

import json

import pytest

from shared.errors import InputError
from shared.upn.dispatch import handle_message
from shared.upn.messages import users_message
from shared.upn.sweep import sweep
from tests.e2e.stack import running_stack, tenant, uid, user
from tests.upn.stack_steps import rename


@pytest.mark.parametrize(("body", "problem"), [
    (b"{not json", "not JSON"), (b"[]", "no known kind"), (b'{"kind": "policy"}', "no known kind"),
    (b'{"kind": "sweep"}', "no known kind"),
    (b'{"kind": "users", "users": [{"upn": "a@b"}]}', r"users\[0\]\.id: required field missing")])
async def test_an_unreadable_message_is_an_input_error(azurite, body: bytes, problem: str):
    """Not JSON, no known kind, or users without ids: InputError naming the problem, nothing done."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        text = body if b"users" not in body else json.dumps({**json.loads(body), "tenant": stack.tenant_id}).encode()
        with pytest.raises(InputError, match=problem):
            await handle_message(stack.services, text)


async def test_a_message_of_another_tenant_is_dropped(azurite):
    """One queue may serve many tenants: a message stamped with another is dropped before any read."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        message = {**users_message([{"id": uid(1)}], source="notification"), "tenant": "another"}
        assert await handle_message(stack.services, json.dumps(message)) == {"dropped": "other tenant"}
        assert stack.sim.stats()["http_requests"] == 0


async def test_kinds_go_to_the_processor_and_lifecycle_handling(azurite):
    """`users` runs the processor, `lifecycle` the subscription's handling."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        await rename(stack, 1, "user1@fabrikam.example")
        users = {**users_message([{"id": uid(1)}], source="notification"), "tenant": stack.tenant_id}
        result = await handle_message(stack.services, json.dumps(users))
        assert result["flagged"] == [uid(1)] and result["processed"] == 1
        lifecycle = {"kind": "lifecycle", "event": "missed", "subscriptionId": "not-ours", "tenant": stack.tenant_id}
        assert (await handle_message(stack.services, json.dumps(lifecycle)))["action"] == "ignored"


async def test_a_throttled_message_is_queued_again_for_later(azurite):
    """Graph still answering 429 after the retries: the message goes back on the queue, hidden, and the
    delivery succeeds (so it never counts toward the poison queue)."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        await stack.services.store.queue.clear()
        stack.sim.configure(fault_429_rate=1.0, fault_429_retry_after_s=0)
        users = {**users_message([{"id": uid(1)}], source="notification"), "tenant": stack.tenant_id}
        try:
            result = await handle_message(stack.services, json.dumps(users), dequeue_count=2)
        finally:
            stack.sim.configure(fault_429_rate=0.0)
        assert result["requeued"] is True and result["retryAfter"] >= 1
        assert await stack.services.store.queue.peek_count() == 1  # queued again ...
        assert await stack.services.store.queue.receive(32) == []  # ... and hidden for retryAfter seconds


async def test_a_slow_lane_message_of_another_tenant_is_dropped_and_a_throttled_one_queued_again(azurite):
    """The `passkey-reads` trigger keeps the same rules: another tenant's message is dropped before any read; one
    Graph keeps throttling goes back on its own queue, hidden for Retry-After."""
    from shared.upn.dispatch import handle_passkey_message
    from shared.upn.messages import passkey_reads_message

    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        entry = {"id": uid(1), "upn": "user1@fabrikam.example", "oldUpn": "user1@contoso.example",
                 "detectedAt": "2026-01-01T00:00:00Z"}
        other = {**passkey_reads_message([entry], source="sweep"), "tenant": "another"}
        assert await handle_passkey_message(stack.services, json.dumps(other)) == {"dropped": "other tenant"}
        assert stack.sim.stats()["http_requests"] == 0
        await stack.services.store.queue.clear()
        await stack.services.store.passkey_reads.clear()
        stack.sim.configure(fault_429_rate=1.0, fault_429_retry_after_s=0)
        ours = {**passkey_reads_message([entry], source="sweep"), "tenant": stack.tenant_id}
        try:
            result = await handle_passkey_message(stack.services, json.dumps(ours), dequeue_count=2)
        finally:
            stack.sim.configure(fault_429_rate=0.0)
        assert result["requeued"] is True
        assert await stack.services.store.passkey_reads.peek_count() == 1
        assert await stack.services.store.queue.peek_count() == 0
        await stack.services.store.passkey_reads.clear()  # the queue is shared: leave nothing to the next test
