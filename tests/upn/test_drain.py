"""The command line's queue drain keeps the Functions host's delivery rules (host.json), in-process."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from shared.upn import drain
from shared.upn.intake import LifecycleEvent
from shared.upn.messages import lifecycle_message, send_messages, users_message
from shared.upn.subscriptions import SUBSCRIPTION_CHECKPOINT
from shared.upn.sweep import sweep
from tests.e2e.stack import running_stack, tenant, uid, user
from tests.reliability.helpers import clear_queue, poison_count
from tests.upn.stack_steps import rename

ROOT = Path(__file__).resolve().parents[2]


def test_drain_rules_are_the_hosts() -> None:
    """Batch size, refill threshold, deliveries before poison and the retry delay are host.json's settings."""
    queues = json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]
    hours, minutes, seconds = (int(part) for part in queues["visibilityTimeout"].split(":"))
    assert drain.BATCH_SIZE == queues["batchSize"]
    assert drain.NEW_BATCH_THRESHOLD == queues["newBatchThreshold"]
    assert drain.MAX_DEQUEUE_COUNT == queues["maxDequeueCount"]
    assert drain.RETRY_SECONDS == hours * 3600 + minutes * 60 + seconds


async def test_a_failing_message_is_retried_then_poisoned(azurite):
    """A message whose processing keeps failing (here: recreating the subscription without NOTIFICATION_URL)
    is delivered five times, then moved to the poison queue; the message beside it is processed once."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        conn = azurite.connection_string
        await clear_queue(conn)
        await sweep(stack.services)
        await clear_queue(conn)
        # lifecycle events act only on the stored subscription: store it, so its removal must recreate it
        await stack.services.store.checkpoints.put(SUBSCRIPTION_CHECKPOINT, {
            "id": "11111111-0000-4000-8000-000000000001", "expirationDateTime": "2030-01-01T00:00:00+00:00"})
        removed = LifecycleEvent("subscriptionRemoved", "11111111-0000-4000-8000-000000000001", stack.tenant_id)
        await send_messages(stack.services, [lifecycle_message(removed),
                                             users_message([{"id": uid(1)}], source="sweep")])
        totals = await drain.process_queue(stack.services, retry_seconds=0)
        assert totals["failed"] == drain.MAX_DEQUEUE_COUNT
        assert totals["poisoned"] == 1 and totals["remaining"] == 0
        assert totals["messages"] == 1 and totals["processed"] == 1 and totals["flagged"] == []
        assert await poison_count(conn) == 1
        assert "1 moved to the poison queue" in drain.summary(totals)


async def test_the_drain_waits_for_a_producer_beside_it(azurite):
    """With `until`, an empty queue does not end the drain while the producer runs; what it queues is processed."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        conn = azurite.connection_string
        await clear_queue(conn)
        await sweep(stack.services)
        await clear_queue(conn)
        producing = asyncio.Event()
        delivered: list[float] = []

        async def producer() -> None:
            await asyncio.sleep(0)  # the drain starts on an empty queue
            await send_messages(stack.services, [users_message([{"id": uid(1)}], source="sweep")])
            producing.set()

        totals, _ = await asyncio.gather(
            drain.process_queue(stack.services, until=producing.is_set, on_delivered=lambda: delivered.append(1)),
            producer())
        assert totals["messages"] == 1 and totals["processed"] == 1 and totals["remaining"] == 0
        assert delivered == [1]


async def test_the_drain_runs_the_slow_lane_the_processor_feeds(azurite):
    """A renamed holder goes through both queues: the processor's message, then the slow lane's, which the drain
    keeps polling for until the processor's queue is done; the flag ends with its details complete."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        conn = azurite.connection_string
        await clear_queue(conn)
        await sweep(stack.services)
        await clear_queue(conn)
        await rename(stack, 1, "user1@fabrikam.example")
        await sweep(stack.services)
        totals = await drain.process_queue(stack.services)
        assert totals["messages"] == 2 and totals["flagged"] == [uid(1)] and totals["remaining"] == 0
        assert await stack.services.store.passkey_reads.peek_count() == 0
        assert (await stack.flag(uid(1)))["passkeyDetails"] == "complete"
