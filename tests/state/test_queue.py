"""ChangeQueue against Azurite: JSON in, base64 on the wire, size limit, receive/delete/peek."""
from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest
from azure.storage.queue.aio import QueueClient

from devhost.azurite import Azurite
from shared.config import QUEUE_NAME
from shared.errors import InputError, PayloadTooLarge
from shared.state import MAX_MESSAGE_BYTES, StateStore


@pytest.fixture
async def queue_store(store: StateStore) -> AsyncIterator[StateStore]:
    """The store with an empty `upn-changes` queue (queue tests share one Azurite)."""
    await store.queue.clear()
    yield store
    await store.queue.clear()


async def test_send_receive_delete_round_trip(queue_store: StateStore, tenant: str) -> None:
    """Messages come back as the dicts sent, with ids and pop receipts; deleted ones are gone."""
    messages = [{"tenant": tenant, "user_ids": [f"u{i}-{j}" for j in range(20)]} for i in range(3)]
    ids = await queue_store.queue.send(messages)
    assert len(set(ids)) == 3
    assert await queue_store.queue.peek_count() == 3
    received = await queue_store.queue.receive(10)
    assert sorted(m.body["user_ids"][0] for m in received) == ["u0-0", "u1-0", "u2-0"]
    assert all(m.dequeue_count == 1 and m.body["tenant"] == tenant for m in received)
    for message in received:
        await queue_store.queue.delete(message)
    assert await queue_store.queue.peek_count() == 0
    assert await queue_store.queue.send([]) == []


async def test_messages_are_base64_on_the_wire(queue_store: StateStore, azurite: Azurite) -> None:
    """A plain client without a decode policy sees base64 text that decodes to our JSON (what Functions expects)."""
    payload = {"tenant": "t", "user_ids": ["ü-1", "a/b"]}
    await queue_store.queue.send([payload])
    async with QueueClient.from_connection_string(azurite.connection_string, QUEUE_NAME) as raw:
        wire = [m async for m in raw.receive_messages(max_messages=1)]
    assert len(wire) == 1
    text = wire[0].content
    assert not text.lstrip().startswith("{")
    assert json.loads(base64.b64decode(text, validate=True)) == payload


async def test_oversized_message_is_refused_and_nothing_sent(queue_store: StateStore) -> None:
    """A message over 64 KiB once encoded raises PayloadTooLarge and none of the batch is sent."""
    big = {"user_ids": ["x" * 1000] * 50}
    assert len(base64.b64encode(json.dumps(big).encode())) > MAX_MESSAGE_BYTES
    with pytest.raises(PayloadTooLarge):
        await queue_store.queue.send([{"ok": 1}, big])
    assert await queue_store.queue.peek_count() == 0


async def test_visibility_timeout_hides_a_message(queue_store: StateStore) -> None:
    """A message sent with a visibility delay is counted but not received yet (re-enqueue after a 429)."""
    await queue_store.queue.send([{"retry": 1}], visibility_timeout=120)
    assert await queue_store.queue.peek_count() == 1
    assert await queue_store.queue.receive(32) == []
    with pytest.raises(InputError):
        await queue_store.queue.send([{"x": 1}], visibility_timeout=-1)
