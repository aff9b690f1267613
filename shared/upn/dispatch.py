"""The queue triggers' work: one `upn-changes` message, dispatched by kind to the processor (`users`) or
the subscription's lifecycle handling (`lifecycle`, which may run a sweep); one `passkey-reads` message to the
slow lane (`passkey_reads.py`). A message for another tenant is dropped; one that Graph throttled is queued
again hidden for `Retry-After`, without counting toward the poison queue. `drain.py` runs these for the
command line with the host's delivery rules.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from shared.errors import GraphThrottled
from shared.services import Services
from shared.state.queue import ChangeQueue
from shared.upn.messages import send_messages
from shared.upn.processor import process_users
from shared.upn.subscriptions import handle_lifecycle

log = logging.getLogger(__name__)


async def handle_message(services: Services, body: bytes | str, *, dequeue_count: int = 1) -> dict[str, Any]:
    """The queue trigger's work: dispatch one message by kind; a throttled message is re-queued.

    The message is read by its model (`shared.schemas.messages`): not JSON, no known kind or a field that is
    not the producers' is an InputError naming it."""
    from shared.schemas.messages import UsersMessage, parse_change_message

    message = parse_change_message(body)

    async def work() -> dict[str, Any]:
        if isinstance(message, UsersMessage):
            users = [user.model_dump(exclude_none=True) for user in message.users]
            return await process_users(services, users, source=message.source, ticket_id=message.ticketId,
                                       old_upn_hint=message.oldUpn, queued_reads=True)
        return await handle_lifecycle(services, message.event, message.subscriptionId)

    return await _deliver(services, message, work, services.store.queue, dequeue_count)


async def handle_passkey_message(services: Services, body: bytes | str, *, dequeue_count: int = 1) -> dict[str, Any]:
    """The `passkey_reads` trigger's work: read one slow-lane message's passkeys and settle each case."""
    from shared.schemas.messages import parse_passkey_message
    from shared.upn.passkey_reads import read_and_decide

    message = parse_passkey_message(body)
    return await _deliver(services, message, lambda: read_and_decide(services, message),
                          services.store.passkey_reads, dequeue_count)


async def _deliver(services: Services, message: Any, work: Callable[[], Awaitable[dict[str, Any]]],
                   queue: ChangeQueue, dequeue_count: int) -> dict[str, Any]:
    """Both triggers' rules around `work`: the message's run id bound to the logs, another tenant's message
    dropped before any read, and Graph still throttling after the retries: the message back on its `queue`."""
    from shared.telemetry import bind_run

    bind_run(message.runId)
    if message.tenant != services.settings.tenant_id:
        log.warning("dropping a queue message for another tenant")
        return {"dropped": "other tenant"}
    try:
        return await work()
    except GraphThrottled as exc:
        return await _requeue(services, message, exc, dequeue_count, queue)


async def _requeue(services: Services, message: Any, exc: GraphThrottled, dequeue_count: int,
                   queue: ChangeQueue) -> dict[str, Any]:
    """Queue a throttled message again, hidden for Graph's `Retry-After` (not a failed delivery)."""
    delay = max(1, int(exc.retry_after or 30))
    await send_messages(services, [message.model_dump(exclude_none=True)], delay=delay, queue=queue)
    log.warning("Graph throttled a %s message; re-queued for %d s (delivery %d)", message.kind, delay,
                dequeue_count)
    return {"requeued": True, "retryAfter": delay}
