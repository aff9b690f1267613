"""The `upn-changes` queue's messages: their shape, and queueing them stamped with the tenant.

Every source (Graph notifications, Event Grid, tickets, the delta sweep) ends up as a `users` message of
at most 20 users, one `$batch` of `fido2Methods` reads for the processor; lifecycle work (reauthorize,
recreate, sweep) is a `lifecycle` message. Queueing is all a webhook does: it never calls Graph.
`shared/upn/dispatch.py` handles the messages.

Each message is built from its model in `shared.schemas.messages`, the one the queue trigger reads it
with, so a field the consumer would refuse fails here, at the producer (a pydantic ValidationError).
The models are imported inside the builders: pydantic stays out of the modules' import.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shared.services import Services
from shared.upn.clock import iso, now
from shared.upn.intake import ChangeNotice, LifecycleEvent

if TYPE_CHECKING:
    from shared.state.queue import ChangeQueue

USERS_PER_MESSAGE = 20  # one $batch of fido2Methods reads per message
MESSAGE_VERSION = 1


def users_message(users: list[dict[str, Any]], *, source: str, ticket_id: str | None = None,
                  old_upn: str | None = None) -> dict[str, Any]:
    """A queue message for 1 to 20 users, each a `UserEntry`: `{"id", "upn"?, "oldUpn"?, "oldUpnSeenAt"?,
    "seenAt"?, "removed"?}` (`seenAt`: when the sweep read `upn` from Graph)."""
    from shared.schemas.messages import UserEntry, UsersMessage

    return UsersMessage(v=MESSAGE_VERSION, kind="users", source=source, users=[UserEntry(**u) for u in users],
                        at=iso(now()),
                        ticketId=ticket_id or None, oldUpn=old_upn or None,
                        ).model_dump(mode="json", exclude_none=True)


def passkey_reads_message(entries: list[dict[str, Any]], *, source: str,
                          ticket_id: str | None = None) -> dict[str, Any]:
    """A `passkey-reads` message for 1 to 20 changed users, each a `PasskeyEntry`."""
    from shared.schemas.messages import PasskeyEntry, PasskeyReadsMessage

    return PasskeyReadsMessage(v=MESSAGE_VERSION, kind="passkeys", source=source,
                               users=[PasskeyEntry(**e) for e in entries], at=iso(now()), ticketId=ticket_id or None,
                               ).model_dump(mode="json", exclude_none=True)


def lifecycle_message(event: LifecycleEvent) -> dict[str, Any]:
    """The queue message for one lifecycle event (reauthorize, recreate, sweep)."""
    from shared.schemas.messages import LifecycleMessage

    return LifecycleMessage(v=MESSAGE_VERSION, kind="lifecycle", event=event.event,
                            subscriptionId=event.subscription_id or None,
                            ).model_dump(mode="json", exclude_none=True)


def chunk_users(users: list[dict[str, Any]], *, source: str) -> list[dict[str, Any]]:
    """`users` as messages of at most 20 users each."""
    return [users_message(users[i:i + USERS_PER_MESSAGE], source=source)
            for i in range(0, len(users), USERS_PER_MESSAGE)]


async def send_messages(services: Services, messages: list[dict[str, Any]], *, delay: int = 0,
                        queue: ChangeQueue | None = None) -> None:
    """Queue messages stamped with the tenant they belong to (one queue may serve many tenants), on
    `upn-changes` unless another `queue` is given."""
    from shared.telemetry import current_run_id

    if messages:
        run = current_run_id()
        await (queue or services.store.queue).send(
            [{**m, "tenant": services.settings.tenant_id, **({"runId": run} if run else {})} for m in messages],
            visibility_timeout=delay)


async def enqueue_notices(services: Services, notices: Iterable[ChangeNotice]) -> int:
    """Queue the users named by change notifications (ids only: the processor reads their UPN)."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for notice in notices:
        if notice.user_id in seen:
            continue
        seen.add(notice.user_id)
        # A `deleted` notice is queued like any other: the processor reads the user, and only Graph's 404
        # confirms the deletion before the snapshot is forgotten (a notice alone never forgets anyone).
        entry: dict[str, Any] = {"id": notice.user_id}
        by_source.setdefault(notice.source, []).append(entry)
    await send_messages(services, [m for source, users in by_source.items()
                                   for m in chunk_users(users, source=source)])
    return len(seen)


async def enqueue_lifecycle(services: Services, events: Iterable[LifecycleEvent]) -> int:
    """Queue lifecycle work (reauthorize, recreate, sweep): the webhook itself never calls Graph."""
    messages = [lifecycle_message(e) for e in events]
    await send_messages(services, messages)
    return len(messages)
