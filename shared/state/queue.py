"""The `upn-changes` queue: JSON messages, base64 on the wire (what the Functions queue trigger expects).

The v12 SDK sends plain text by default while the trigger (`host.json` messageEncoding, default base64)
decodes base64, so every client here uses TextBase64EncodePolicy / TextBase64DecodePolicy.
`receive`, `delete`, `release` and `move_to_poison` serve the CLI's drain (`shared.upn.drain`), the devhost
and tests; in Azure the host consumes.
"""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.config import QUEUE_NAME
from shared.errors import InputError, PayloadTooLarge
from shared.state.clients import StorageClients
from shared.state.codec import plain_value
from shared.state.errors import container_missing, storage_errors

log = logging.getLogger(__name__)

#: Azure's limit for one message, counted on the encoded (base64) text.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_RECEIVE = 32
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class QueuedMessage:
    """One received message: `body` is the decoded JSON (None when the text was not JSON)."""

    id: str
    pop_receipt: str
    text: str
    body: Any
    dequeue_count: int
    inserted_on: dt.datetime | None


def encode_message(message: Mapping[str, Any]) -> str:
    """The JSON text of one message; PayloadTooLarge when its base64 form exceeds 64 KiB."""
    if not isinstance(message, Mapping):
        raise InputError("queue messages must be JSON objects")
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    encoded_len = len(base64.b64encode(text.encode("utf-8")))
    if encoded_len > MAX_MESSAGE_BYTES:
        raise PayloadTooLarge(f"queue message is {encoded_len} bytes encoded; the limit is {MAX_MESSAGE_BYTES}",
                              detail={"limit": MAX_MESSAGE_BYTES, "actual": encoded_len})
    return text


class ChangeQueue:
    """Producer (and test/devhost consumer) side of one storage queue, `upn-changes` by default."""

    def __init__(self, clients: StorageClients, name: str = QUEUE_NAME, *, concurrency: int = 16,
                 create: bool = True) -> None:
        """`create=False`: the queue is provisioned elsewhere (Bicep) and never created from here."""
        self._clients = clients
        self.name = name
        self._create = create
        self._ensured = not create
        self._lock = asyncio.Lock()
        self._concurrency = concurrency

    async def ensure(self, *, force: bool = False) -> None:
        """Create the queue if absent (idempotent; remembered after the first success)."""
        if self._ensured and not force:
            return
        async with self._lock:
            if self._ensured and not force:
                return
            client = await self._clients.queue(self.name)
            with storage_errors(f"creating queue {self.name}"):
                try:
                    await client.create_queue()
                except ResourceExistsError:
                    pass
            self._ensured = True

    async def send(self, messages: list[dict[str, Any]], visibility_timeout: int = 0) -> list[str]:
        """Enqueue JSON messages (all validated before any is sent); returns the message ids.

        `visibility_timeout` delays delivery (e.g. a Graph `Retry-After`), at most 7 days.
        """
        if not 0 <= visibility_timeout <= MAX_VISIBILITY_SECONDS:
            raise InputError(f"visibility_timeout must be between 0 and {MAX_VISIBILITY_SECONDS} seconds")
        texts = [encode_message(m) for m in messages]
        if not texts:
            return []
        await self.ensure()
        client = await self._clients.queue(self.name)
        limit = asyncio.Semaphore(self._concurrency)

        async def one(text: str) -> str:
            async with limit:
                with storage_errors("sending a queue message"):
                    sent = await client.send_message(text, visibility_timeout=visibility_timeout or None)
                return str(sent.id)

        try:
            return list(await asyncio.gather(*(one(t) for t in texts)))
        except Exception as exc:
            if isinstance(exc.__cause__, ResourceNotFoundError) and container_missing(exc.__cause__):
                self._ensured = False  # the queue vanished (in-memory Azurite restart): recreate next time
            raise

    async def receive(self, max_messages: int = MAX_RECEIVE, visibility_timeout: int = 30) -> list[QueuedMessage]:
        """Up to `max_messages` (≤ 32) visible messages, hidden for `visibility_timeout` seconds."""
        count = max(1, min(max_messages, MAX_RECEIVE))
        await self.ensure()
        client = await self._clients.queue(self.name)
        received: list[QueuedMessage] = []
        with storage_errors("receiving queue messages"):
            pager = client.receive_messages(messages_per_page=count, max_messages=count,
                                            visibility_timeout=visibility_timeout)
            async for msg in pager:
                text = str(msg.content)
                try:
                    body: Any = json.loads(text)
                except ValueError:
                    body = None
                inserted = plain_value(msg.inserted_on) if msg.inserted_on else None
                received.append(QueuedMessage(id=str(msg.id), pop_receipt=str(msg.pop_receipt), text=text,
                                              body=body, dequeue_count=int(msg.dequeue_count or 0),
                                              inserted_on=inserted))
                if len(received) >= count:
                    break
        return received

    async def delete(self, message: QueuedMessage) -> None:
        """Delete a received message (after it was processed)."""
        client = await self._clients.queue(self.name)
        with storage_errors("deleting a queue message"):
            await client.delete_message(message.id, message.pop_receipt)

    async def release(self, message: QueuedMessage, delay: int) -> None:
        """Give a received message back, visible again after `delay` seconds (a failed delivery to retry)."""
        client = await self._clients.queue(self.name)
        with storage_errors("releasing a queue message"):
            await client.update_message(message.id, message.pop_receipt, visibility_timeout=delay)

    async def move_to_poison(self, message: QueuedMessage) -> None:
        """Put the message's text on `<name>-poison` and delete it, as the Functions host does after
        `maxDequeueCount` failed deliveries (the poison queue is provisioned beside this one)."""
        poison = ChangeQueue(self._clients, f"{self.name}-poison", create=self._create)
        await poison.ensure()
        client = await self._clients.queue(poison.name)
        with storage_errors("moving a message to the poison queue"):
            await client.send_message(message.text)
        await self.delete(message)

    async def peek_count(self) -> int:
        """The approximate number of messages in the queue (visible and invisible)."""
        await self.ensure()
        client = await self._clients.queue(self.name)
        with storage_errors("reading queue properties"):
            props = await client.get_queue_properties()
        return int(props.approximate_message_count or 0)

    async def clear(self) -> None:
        """Delete every message (tests and `make demo` resets)."""
        await self.ensure()
        client = await self._clients.queue(self.name)
        with storage_errors("clearing the queue"):
            await client.clear_messages()
