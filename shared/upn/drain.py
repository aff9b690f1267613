"""Process the `upn-changes` queue, and the `passkey-reads` slow lane it feeds, in this process: the one
in-process drain, for the command line (`sweep --process`, `process-queue`) and the mass-rename benchmark.

Without a deployed app nobody consumes the queue, so a sweep from a shell would only queue. This drain hands
each message to the function its queue trigger runs (`handle_message`, `handle_passkey_message`), with the
host's delivery rules
(host.json): 16 messages fetched at a time and a new batch once 8 or fewer are in flight; a message that
fails becomes visible again after 10 s and moves to `upn-changes-poison` on its 5th failed delivery. A
message that can never succeed (not JSON, no known kind: an `InputError`) goes to the poison queue at once
instead of failing four more times. Messages hidden for a while (re-queued after a Graph 429 with its
`Retry-After`, or failed and waiting to be retried) are waited for, up to `wait_seconds` without progress,
so the check ends with an empty queue or says what is left. A producer running beside the drain (the
benchmark's sweep) keeps it polling until `until()` says it is done.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from shared.errors import InputError
from shared.services import Services
from shared.state.queue import ChangeQueue, QueuedMessage
from shared.upn.dispatch import handle_message, handle_passkey_message

Handler = Callable[..., Awaitable[dict[str, Any]]]

log = logging.getLogger(__name__)

#: host.json `extensions.queues`: batchSize, newBatchThreshold, maxDequeueCount, visibilityTimeout (tests
#: keep them in step).
BATCH_SIZE = 16
NEW_BATCH_THRESHOLD = 8
MAX_DEQUEUE_COUNT = 5
RETRY_SECONDS = 10
#: How long a received message stays hidden while it is processed (a lifecycle `missed` runs a whole sweep).
PROCESSING_SECONDS = 600
#: An empty queue is polled again after 0.05 s, doubling up to this.
FIRST_POLL_SECONDS = 0.05
POLL_SECONDS = 1.0


class _Drain:
    """One drain's deliveries and counts."""

    def __init__(self, services: Services, queue: ChangeQueue, handler: Handler, retry_seconds: int,
                 max_dequeue_count: int, on_delivered: Callable[[], None] | None) -> None:
        self.services, self.queue, self.handler = services, queue, handler
        self.retry_seconds, self.max_dequeue_count = retry_seconds, max_dequeue_count
        self.on_delivered = on_delivered
        self.totals: dict[str, Any] = {"messages": 0, "processed": 0, "flagged": [], "requeued": 0, "dropped": 0,
                                       "failed": 0, "poisoned": 0, "remaining": 0}

    async def deliver(self, message: QueuedMessage) -> None:
        """Hand one message to the processor; delete it, or release it for a retry, or poison it."""
        totals = self.totals
        try:
            result = await self.handler(self.services, message.text, dequeue_count=message.dequeue_count)
        except InputError as exc:
            log.error("queue message %s cannot be processed (%s); moved to the poison queue", message.id, exc.message)
            await self.queue.move_to_poison(message)
            totals["poisoned"] += 1
            return
        except Exception:
            log.exception("queue message %s failed (delivery %d of %d)", message.id, message.dequeue_count,
                          self.max_dequeue_count)
            totals["failed"] += 1
            if message.dequeue_count >= self.max_dequeue_count:
                await self.queue.move_to_poison(message)
                totals["poisoned"] += 1
            else:
                await self.queue.release(message, self.retry_seconds)
            return
        await self.queue.delete(message)
        totals["messages"] += 1
        totals["processed"] += int(result.get("processed", 0))
        totals["flagged"] += list(result.get("flagged", []))
        totals["requeued"] += bool(result.get("requeued"))
        totals["dropped"] += bool(result.get("dropped"))
        if self.on_delivered is not None:
            self.on_delivered()


async def _settle(in_flight: set[asyncio.Task[None]], at_most: float | None) -> None:
    """Wait for at least one delivery (or `at_most` seconds); a delivery that raised raises here."""
    done, _ = await asyncio.wait(in_flight, timeout=at_most, return_when=asyncio.FIRST_COMPLETED)
    in_flight.difference_update(done)
    for task in done:
        task.result()


async def process_queue(services: Services, *, wait_seconds: float = 300.0, retry_seconds: int = RETRY_SECONDS,
                        max_dequeue_count: int = MAX_DEQUEUE_COUNT, until: Callable[[], bool] | None = None,
                        on_delivered: Callable[[], None] | None = None) -> dict[str, Any]:
    """Deliver every message of `upn-changes` to the processor and of `passkey-reads` to the slow lane until
    both are empty (and `until()`, when given, is true: a producer beside the drain may still be queueing;
    the slow lane's producer is the processor). `on_delivered` runs after each message processed and deleted.

    Returns counts over both queues: `messages` delivered, `processed` users, `flagged` user ids, `requeued`
    (throttled), `dropped` (another tenant's), `failed` deliveries, `poisoned` messages and `remaining` (still
    queued when nothing became visible for `wait_seconds`).
    """
    changes = _Drain(services, services.store.queue, handle_message, retry_seconds, max_dequeue_count, on_delivered)
    reads = _Drain(services, services.store.passkey_reads, handle_passkey_message, retry_seconds, max_dequeue_count,
                   on_delivered)
    changes_done = False

    async def drain_changes() -> None:
        nonlocal changes_done
        try:
            await _drain(changes, wait_seconds, until)
        finally:
            changes_done = True

    await asyncio.gather(drain_changes(), _drain(reads, wait_seconds, lambda: changes_done))
    return {key: value + reads.totals[key] for key, value in changes.totals.items()}


async def _drain(drain: _Drain, wait_seconds: float, until: Callable[[], bool] | None) -> None:
    """One queue's deliveries, 16 at a time, until it is empty and `until()` is true (or nothing became
    visible for `wait_seconds`)."""
    in_flight: set[asyncio.Task[None]] = set()
    poll, idle_since = FIRST_POLL_SECONDS, time.monotonic()
    try:
        while True:
            if len(in_flight) > NEW_BATCH_THRESHOLD:
                await _settle(in_flight, None)
                continue
            producer_done = until is None or until()  # read before receiving: nothing queued after is missed
            batch = await drain.queue.receive(BATCH_SIZE, visibility_timeout=PROCESSING_SECONDS)
            if batch:
                in_flight.update(asyncio.create_task(drain.deliver(message)) for message in batch)
                poll, idle_since = FIRST_POLL_SECONDS, time.monotonic()
                continue
            if in_flight:
                await _settle(in_flight, poll)
                idle_since = time.monotonic()
                continue
            drain.totals["remaining"] = await drain.queue.peek_count()
            if (drain.totals["remaining"] == 0 and producer_done) or time.monotonic() - idle_since >= wait_seconds:
                return
            await asyncio.sleep(poll)
            poll = min(POLL_SECONDS, poll * 2)
    finally:
        for task in in_flight:
            task.cancel()


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
