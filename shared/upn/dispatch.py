"""The queue trigger's work: one `upn-changes` message, dispatched by kind to the processor (`users`),
the subscription's lifecycle handling (`lifecycle`) or the sweep (`sweep`). A message for another tenant
is dropped; one that Graph throttled is queued again hidden for `Retry-After`, without counting toward
the poison queue. `drain.py` runs this for the command line with the host's delivery rules.
"""
from __future__ import annotations

import logging
from typing import Any

from shared.errors import GraphThrottled, InputError
from shared.services import Services
from shared.upn.messages import send_messages
from shared.upn.processor import process_users
from shared.upn.subscriptions import handle_lifecycle
from shared.upn.sweep import sweep

log = logging.getLogger(__name__)


async def handle_message(services: Services, body: bytes | str, *, dequeue_count: int = 1) -> dict[str, Any]:
    """The queue trigger's work: dispatch one message by kind; a throttled message is re-queued."""
    import json

    try:
        message = json.loads(body)
    except ValueError:
        raise InputError("queue message is not JSON") from None
    if not isinstance(message, dict) or message.get("kind") not in ("users", "lifecycle", "sweep"):
        raise InputError("queue message has no known kind")
    from shared.telemetry import bind_run

    bind_run(message.get("runId") if isinstance(message.get("runId"), str) else None)
    if message.get("tenant") != services.settings.tenant_id:
        log.warning("dropping a queue message for another tenant")
        return {"dropped": "other tenant"}
    try:
        if message["kind"] == "users":
            users = message.get("users")
            if not isinstance(users, list) or not all(isinstance(u, dict) and u.get("id") for u in users):
                raise InputError("queue message users: expected a list of {id}")
            result = await process_users(services, users, source=str(message.get("source", "sweep")),
                                         ticket_id=message.get("ticketId"), old_upn_hint=message.get("oldUpn"))
            return result
        if message["kind"] == "lifecycle":
            return await handle_lifecycle(services, str(message.get("event")), message.get("subscriptionId"))
        return await sweep(services, trigger="queue")
    except GraphThrottled as exc:
        delay = max(1, int(exc.retry_after or 30))
        await send_messages(services, [message], delay=delay)
        log.warning("Graph throttled a %s message; re-queued for %d s (delivery %d)", message["kind"], delay,
                    dequeue_count)
        return {"requeued": True, "retryAfter": delay}
