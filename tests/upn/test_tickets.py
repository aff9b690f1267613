"""Ticket events: only a signed, fresh ticket is read; the use case carries each event id out once whoever
calls; and a recheck re-evaluates the user's flag with the tracker's own rule, so it does what the timer
would do for that user."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.errors import InputError
from shared.upn.sweep import sweep
from shared.upn.ticket_webhook import TicketEvent, sign_ticket
from shared.upn.tickets import ticket_action
from shared.upn.tracker import track_flags
from tests.conftest import TICKET_SECRET
from tests.e2e.stack import eventually, running_stack, tenant, uid, user
from tests.upn.stack_steps import keys, post_ticket, rename

ENFORCE = {"ENFORCEMENT_MODE": "enforce", "REMOVE_STALE_PASSKEYS": "true"}


def _outcome(flag: dict[str, Any]) -> tuple[Any, ...]:
    """What the tracker decided for a flag, without the user-specific ids and times."""
    return (flag["status"], len(flag["removedPasskeys"]), flag.get("removalHold"), flag.get("removalApproval"),
            [h["status"] for h in flag["history"]])


async def test_a_recheck_ticket_removes_stale_passkeys_as_the_timer_does(azurite):
    """A recheck of a user whose flag qualifies for stale-passkey removal deletes the pre-change passkey and
    records it, exactly as the tracker's timer run does for a user in the same state."""
    async with running_stack(azurite, tenant([user(1), user(2)]), **ENFORCE) as stack:
        await sweep(stack.services)
        for n in (1, 2):
            await rename(stack, n, f"user{n}@fabrikam.example")
        await sweep(stack.services)

        async def flagged() -> bool:
            return {f["userId"] for f in await stack.all_flags()} >= {uid(1), uid(2)}

        await eventually(flagged)
        old_key = keys(stack, 1)[0]["id"]

        status, text = await post_ticket(stack, {"eventId": "evt-r1", "action": "recheck_user",
                                                    "userId": uid(1), "ticketId": "INC-7"})
        assert status == 200, text
        answer = json.loads(text)
        assert keys(stack, 1) == []  # the recheck deleted the pre-change passkey
        assert answer["flag"]["status"] == "removed" and answer["flag"]["removedPasskeys"] == [old_key]
        assert len(keys(stack, 2)) == 1  # nobody else's passkeys are touched by a recheck

        timer = await track_flags(stack.services)
        assert timer["removedPasskeys"] == 1  # user 2's; user 1's are already gone
        assert keys(stack, 2) == []
        by_ticket, by_timer = await stack.flag(uid(1)), await stack.flag(uid(2))
        assert by_ticket is not None and by_timer is not None
        assert _outcome(by_ticket) == _outcome(by_timer)


async def test_an_event_id_is_carried_out_once_whoever_calls(azurite):
    """The use case itself claims the event id: a second call with the same id answers `duplicate` and does
    nothing again, without the HTTP layer in between."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        await rename(stack, 1, "user1@fabrikam.example")
        event = TicketEvent(event_id="evt-once", action="upn_changed", timestamp=datetime.now(UTC), user_id=uid(1),
                            ticket_id="INC-1")
        first = await ticket_action(stack.services, event)
        assert first["duplicate"] is False and first["flag"]["status"] == "pending"
        second = await ticket_action(stack.services, event)
        assert second == {"eventId": "evt-once", "duplicate": True,
                          "message": "this event id was already handled; nothing was done again"}
        flag = await stack.flag(uid(1))
        assert flag is not None and len(flag["history"]) == 1


async def test_a_failed_event_is_forgotten_so_a_retry_runs_it_again(azurite):
    """An event whose action failed is not remembered: the ticketing system's retry is carried out, not
    answered `duplicate`."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        event = TicketEvent(event_id="evt-retry", action="recheck_user", timestamp=datetime.now(UTC),
                            user_principal_name="nobody@contoso.example")
        for _ in range(2):
            with pytest.raises(InputError, match="userPrincipalName: no user"):
                await ticket_action(stack.services, event)


async def test_a_ticket_with_a_bad_signature_or_old_timestamp_gets_401_and_writes_nothing(azurite):
    """Bad HMAC or an expired timestamp: 401, and no event, flag or queue message is written."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        await stack.services.store.queue.clear()
        body = json.dumps({"eventId": "evt-1", "action": "upn_changed", "userId": uid(1),
                           "ticketId": "INC-1"}).encode()
        good = sign_ticket(body, TICKET_SECRET, int(time.time()))
        cases = [
            {**good, "X-Signature": "sha256=" + "0" * 64},
            sign_ticket(body, "wrong-secret", int(time.time())),
            sign_ticket(body, TICKET_SECRET, int(time.time()) - 600),
        ]
        for headers in cases:
            status, text, _ = await stack.post("tickets", body, headers=headers)
            assert status == 401, text
        assert await stack.services.store.queue.peek_count() == 0
        assert await stack.flag(uid(1)) is None
        assert await stack.services.store.claim_event(stack.tenant_id, "ticket:evt-1", 60)  # never claimed


async def test_a_signed_ticket_flags_the_user_once(azurite):
    """A signed upn_changed ticket answers with the flag; the same event id again does nothing new."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        await rename(stack, 1, "user1@fabrikam.example")
        body = json.dumps({"eventId": "evt-2", "action": "upn_changed", "userId": uid(1),
                           "ticketId": "INC-2"}).encode()
        status, text, _ = await stack.post("tickets", body, headers=sign_ticket(body, TICKET_SECRET,
                                                                                  int(time.time())))
        assert status == 200, text
        answer = json.loads(text)
        assert answer["flag"]["ticketId"] == "INC-2" and answer["flag"]["status"] == "pending"
        status, text, _ = await stack.post("tickets", body, headers=sign_ticket(body, TICKET_SECRET,
                                                                                  int(time.time())))
        assert status == 200 and json.loads(text)["duplicate"] is True
        assert len(await stack.all_flags()) == 1
