"""Process the `upn-changes` queue in this process, for the command line (`sweep --process`, `process-queue`).

Without a deployed app nobody consumes the queue, so a sweep from a shell would only queue. This drain hands
each message to `handle_message`, the processor the queue trigger runs, with the host's delivery rules
(host.json): up to 16 messages at a time; a message that fails becomes visible again after 10 s and moves to
`upn-changes-poison` on its 5th failed delivery. A message that can never succeed (not JSON, no known kind:
an `InputError`) goes to the poison queue at once instead of failing four more times. Messages hidden for a
while (re-queued after a Graph 429 with its `Retry-After`, or failed and waiting to be retried) are waited
for, up to `wait_seconds` without progress, so the check ends with an empty queue or says what is left.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from shared.errors import InputError
from shared.services import Services
from shared.state.queue import QueuedMessage
from shared.upn.dispatch import handle_message

log = logging.getLogger(__name__)

#: host.json `extensions.queues`: batchSize, maxDequeueCount, visibilityTimeout (tests keep them in step).
BATCH_SIZE = 16
MAX_DEQUEUE_COUNT = 5
RETRY_SECONDS = 10
#: How long a received message stays hidden while it is processed (a `sweep` message runs a whole sweep).
PROCESSING_SECONDS = 600
POLL_SECONDS = 1.0


async def process_queue(services: Services, *, wait_seconds: float = 300.0, retry_seconds: int = RETRY_SECONDS,
                        max_dequeue_count: int = MAX_DEQUEUE_COUNT) -> dict[str, Any]:
    """Deliver every message of the queue to the processor until the queue is empty.

    Returns counts: `messages` delivered, `processed` users, `flagged` user ids, `requeued` (throttled),
    `dropped` (another tenant's), `failed` deliveries, `poisoned` messages and `remaining` (still queued when
    nothing became visible for `wait_seconds`).
    """
    queue = services.store.queue
    totals: dict[str, Any] = {"messages": 0, "processed": 0, "flagged": [], "requeued": 0, "dropped": 0,
                              "failed": 0, "poisoned": 0, "remaining": 0}

    async def deliver(message: QueuedMessage) -> None:
        try:
            result = await handle_message(services, message.text, dequeue_count=message.dequeue_count)
        except InputError as exc:
            log.error("queue message %s cannot be processed (%s); moved to the poison queue", message.id, exc.message)
            await queue.move_to_poison(message)
            totals["poisoned"] += 1
            return
        except Exception:
            log.exception("queue message %s failed (delivery %d of %d)", message.id, message.dequeue_count,
                          max_dequeue_count)
            totals["failed"] += 1
            if message.dequeue_count >= max_dequeue_count:
                await queue.move_to_poison(message)
                totals["poisoned"] += 1
            else:
                await queue.release(message, retry_seconds)
            return
        await queue.delete(message)
        totals["messages"] += 1
        totals["processed"] += int(result.get("processed", 0))
        totals["flagged"] += list(result.get("flagged", []))
        totals["requeued"] += bool(result.get("requeued"))
        totals["dropped"] += bool(result.get("dropped"))

    idle_since = time.monotonic()
    while True:
        batch = await queue.receive(BATCH_SIZE, visibility_timeout=PROCESSING_SECONDS)
        if batch:
            await asyncio.gather(*(deliver(message) for message in batch))
            idle_since = time.monotonic()
            continue
        totals["remaining"] = await queue.peek_count()
        if totals["remaining"] == 0 or time.monotonic() - idle_since >= wait_seconds:
            return totals
        await asyncio.sleep(POLL_SECONDS)


def summary(totals: dict[str, Any]) -> str:
    """One line for people: what the drain did and what is left."""
    text = (f"processed {totals['messages']} message(s): flagged {len(totals['flagged'])} user(s) "
            f"of {totals['processed']} checked")
    if totals["requeued"]:
        text += f", {totals['requeued']} throttled and retried"
    if totals["failed"]:
        text += f", {totals['failed']} failed deliveries"
    if totals["poisoned"]:
        text += f", {totals['poisoned']} moved to the poison queue"
    if totals["remaining"]:
        text += f", {totals['remaining']} still queued"
    return text
