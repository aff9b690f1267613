"""The re-registration tracker: a flag is resolved once the user re-registers, and safe stale-passkey removal
(REMOVE_STALE_PASSKEYS): only passkeys older than the last sight of the old UPN, never in audit mode, never on
a ticket's word alone, a re-read of the user first, and a cap per tracker run above which flags wait for an
administrator's approval (CLI or HTTP)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devhost.graph_tokens import admin_token
from shared.upn.decide import holder_flag
from shared.upn.sweep import sweep
from shared.upn.ticket_webhook import sign_ticket
from shared.upn.tracker import track_flags
from tests.conftest import TICKET_SECRET
from tests.e2e.stack import ANDROID, eventually, running_stack, tenant, uid, user
from tests.upn.stack_steps import keys, rename

ENFORCE = {"ENFORCEMENT_MODE": "enforce", "REMOVE_STALE_PASSKEYS": "true"}
ROOT = Path(__file__).resolve().parents[2]


async def _flag_all(stack: Any, numbers: list[int]) -> None:
    """Seed, rename every numbered user to fabrikam, sweep, and wait until each is flagged."""
    await sweep(stack.services)
    for n in numbers:
        await rename(stack, n, f"user{n}@fabrikam.example")
    await sweep(stack.services)

    async def flagged() -> bool:
        settled = {f["userId"] for f in await stack.all_flags() if f["passkeyDetails"] == "complete"}
        return settled >= {uid(n) for n in numbers}

    await eventually(flagged)


async def test_a_passkey_registered_after_the_rename_is_never_removed(azurite):
    """Renamed, then a new passkey registered before the change is seen: only the old passkey is deleted."""
    async with running_stack(azurite, tenant([user(1)]), **ENFORCE) as stack:
        await sweep(stack.services)
        old_key = keys(stack, 1)[0]["id"]
        await rename(stack, 1, "user1@fabrikam.example")
        new_key = stack.sim.register_passkey(uid(1), aaGuid=ANDROID, displayName="Authenticator")["id"]
        await sweep(stack.services)
        flag = await eventually(lambda: stack.settled_flag(uid(1)))
        assert {p["id"] for p in flag["passkeys"]} == {old_key, new_key}
        assert flag["oldUpnSeenAt"]  # the moment the product last saw user1@contoso.example
        result = await track_flags(stack.services)
        assert result["removedPasskeys"] == 1
        assert [k["id"] for k in keys(stack, 1)] == [new_key]
        stored = await stack.flag(uid(1))
        assert stored["removedPasskeys"] == [old_key]


async def test_a_upn_changed_back_before_removal_deletes_nothing_and_dismisses(azurite):
    """The tracker re-reads the user right before deleting: back to the old UPN, nothing goes and the case closes."""
    async with running_stack(azurite, tenant([user(1)]), **ENFORCE) as stack:
        await _flag_all(stack, [1])
        await rename(stack, 1, "user1@contoso.example")  # no notification or sweep has seen this yet
        result = await track_flags(stack.services)
        assert result["removedPasskeys"] == 0
        assert len(keys(stack, 1)) == 1
        stored = await stack.flag(uid(1))
        assert stored["status"] == "dismissed" and stored["removedPasskeys"] == []


async def test_a_ticket_only_old_upn_never_triggers_removal(azurite):
    """A flag whose old UPN only a ticket vouched for is tracked, but its passkeys are never deleted."""
    async with running_stack(azurite, tenant([user(1)]), drain=False, **ENFORCE) as stack:
        await rename(stack, 1, "user1@fabrikam.example")  # never seen before: no snapshot
        body = json.dumps({"eventId": "evt-t1", "action": "upn_changed", "userId": uid(1),
                           "oldUpn": "user1@contoso.example", "ticketId": "INC-9"}).encode()
        status, text, _ = await stack.post("tickets", body, headers=sign_ticket(body, TICKET_SECRET,
                                                                                  int(time.time())))
        assert status == 200, text
        assert json.loads(text)["flag"]["oldUpnOrigin"] == "ticket"
        result = await track_flags(stack.services)
        assert result["removedPasskeys"] == 0 and result["removalHeld"] == {"oldUpnFromTicket": 1}
        assert len(keys(stack, 1)) == 1
        stored = await stack.flag(uid(1))
        assert stored["status"] == "pending" and stored["removalHold"] == "oldUpnFromTicket"


async def test_audit_mode_deletes_nothing_and_records_why(azurite):
    """ENFORCEMENT_MODE=audit is read-only: REMOVE_STALE_PASSKEYS on still deletes nothing, code auditMode."""
    async with running_stack(azurite, tenant([user(1)]), ENFORCEMENT_MODE="audit",
                             REMOVE_STALE_PASSKEYS="true") as stack:
        await _flag_all(stack, [1])
        result = await track_flags(stack.services)
        assert result["removedPasskeys"] == 0 and result["removalHeld"] == {"auditMode": 1}
        assert len(keys(stack, 1)) == 1
        stored = await stack.flag(uid(1))
        assert stored["status"] == "pending" and stored["removalHold"] == "auditMode"


async def test_above_the_cap_flags_wait_for_an_approval_over_http(azurite):
    """Cap 1: one user's passkeys go, the others wait (removalApproval required) until approved by id."""
    async with running_stack(azurite, tenant([user(n) for n in (1, 2, 3)]),
                             STALE_PASSKEY_REMOVAL_MAX_PER_RUN="1", **ENFORCE) as stack:
        await _flag_all(stack, [1, 2, 3])
        first = await track_flags(stack.services)
        assert first["removedPasskeys"] == 1 and first["awaitingApproval"] == 2
        waiting = [f for f in await stack.all_flags() if f.get("removalApproval") == "required"]
        assert len(waiting) == 2 and all(f["status"] == "pending" for f in waiting)
        again = await track_flags(stack.services)  # a new run does not release them on its own
        assert again["removedPasskeys"] == 0 and sum(len(keys(stack, n)) for n in (1, 2, 3)) == 2

        chosen, other = waiting[0]["userId"], waiting[1]["userId"]
        for bad in ({"userIds": [chosen], "all": True}, {"userIds": chosen}, {"userIds": []}, {"userIds": [7]}, {}):
            status, text, _ = await stack.post("flags/approve-removal", json.dumps(bad))
            assert status == 400, (bad, text)
        status, text, _ = await stack.post("flags/approve-removal", json.dumps({"userIds": [chosen, uid(9)]}))
        assert status == 409 and uid(9) in json.loads(text)["error"]["message"]
        assert (await stack.flag(chosen))["removalApproval"] == "required"  # nothing written by a refusal
        status, text, _ = await stack.post("flags/approve-removal", json.dumps({"userIds": [chosen]}))
        assert status == 200 and json.loads(text)["approved"] == [chosen], text
        status, text, _ = await stack.post("flags/approve-removal", json.dumps({"userIds": [chosen]}))
        assert status == 200 and json.loads(text)["alreadyApproved"] == [chosen]  # a replay changes nothing

        third = await track_flags(stack.services)
        assert third["removedPasskeys"] == 1
        assert (await stack.flag(chosen))["status"] == "removed"
        assert (await stack.flag(other))["removalApproval"] == "required"


async def test_the_cli_approves_every_waiting_flag(azurite):
    """`python -m shared flags approve-removal --all-waiting` releases every waiting flag for the next run."""
    async with running_stack(azurite, tenant([user(n) for n in (1, 2)]),
                             STALE_PASSKEY_REMOVAL_MAX_PER_RUN="0", **ENFORCE) as stack:
        await _flag_all(stack, [1, 2])
        assert (await track_flags(stack.services))["awaitingApproval"] == 2
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAPH_", "STATE_", "NOTIFICATION_"))}
        env.update({"TENANT_ID": stack.tenant_id, "GRAPH_BASE_URL": stack.sim.base_url,
                    "GRAPH_DEV_TOKEN": admin_token(stack.tenant_id), "STATE_STORAGE": azurite.connection_string})
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "shared", "flags", "approve-removal",
                                                        "--all-waiting", "--json"],
                                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        assert sorted(json.loads(proc.stdout)["approved"]) == sorted([uid(1), uid(2)])
        result = await track_flags(stack.services)
        assert result["removedPasskeys"] == 2
        assert keys(stack, 1) == [] and keys(stack, 2) == []


async def test_a_user_who_reregisters_gets_the_flag_resolved(azurite):
    """The user deletes the old passkey and registers a new one; the tracker resolves the flag."""
    async with running_stack(azurite, tenant([user(1)])) as stack:
        await sweep(stack.services)
        await rename(stack, 1, "user1@fabrikam.example")
        await sweep(stack.services)
        flag = await eventually(lambda: stack.settled_flag(uid(1)))
        old_key = flag["passkeys"][0]["id"]
        assert (await track_flags(stack.services))["changed"] == 0
        methods = stack.services.graph.client.users.by_user_id(uid(1)).authentication.fido2_methods
        await methods.by_fido2_authentication_method_id(old_key).delete()
        stack.sim.register_passkey(uid(1), aaGuid="de1e552d-db1d-4423-a619-566b625cdc84",
                                   displayName="Authenticator", model="Microsoft Authenticator")
        result = await track_flags(stack.services)
        assert result["changed"] == 1
        assert (await stack.flag(uid(1)))["status"] == "resolved"


async def test_stale_passkeys_are_removed_when_the_setting_allows(azurite):
    """With REMOVE_STALE_PASSKEYS on in enforce mode, the tracker deletes the pre-change passkeys and records it."""
    async with running_stack(azurite, tenant([user(1)]), REMOVE_STALE_PASSKEYS="true",
                             ENFORCEMENT_MODE="enforce") as stack:
        await sweep(stack.services)
        await rename(stack, 1, "user1@fabrikam.example")
        await sweep(stack.services)
        flag = await eventually(lambda: stack.settled_flag(uid(1)))
        result = await track_flags(stack.services)
        assert result["removedPasskeys"] == 1
        stored = await stack.flag(uid(1))
        assert stored["status"] == "removed" and stored["removedPasskeys"] == [flag["passkeys"][0]["id"]]
        remaining = stack.sim.state()
        me = next(u for u in remaining["users"] if u["id"] == uid(1))
        assert me.get("authentication", {}).get("fido2Methods", []) == []


async def test_a_flag_whose_passkey_details_are_pending_is_neither_read_nor_tracked_nor_cleaned(azurite):
    """Opened on the registration report's word, its passkeys are the slow lane's to read: the tracker reads
    none of them, leaves the flag as it is (even with every passkey gone), deletes nothing, and counts it."""
    async with running_stack(azurite, tenant([user(1), user(2)]), **ENFORCE) as stack:
        await _flag_all(stack, [1, 2])
        stored = await stack.services.store.flags.get(uid(2))
        assert stored is not None
        waiting = holder_flag(uid(2), "user2@fabrikam.example", "user2@contoso.example", source="sweep",
                              detected_at=stored.flag.detected_at, old_upn_seen_at=stored.flag.old_upn_seen_at)
        await stack.services.store.flags.update(waiting, stored.etag, created_at=stored.created_at)
        before = await stack.flag(uid(2))
        stack.sim.reset_stats()
        result = await track_flags(stack.services)
        routes = stack.sim.stats()["calls"]["by_route"]
        assert sum(n for route, n in routes.items() if "fido2Methods" in route and route.startswith("GET")) == 1, \
            routes  # user 1's passkeys only
        assert (result["detailsPending"], result["checked"], result["removedPasskeys"]) == (1, 1, 1)
        assert len(keys(stack, 2)) == 1 and keys(stack, 1) == []
        after = await stack.flag(uid(2))
        assert after == before and after["passkeyDetails"] == "pending"

        methods = stack.services.graph.client.users.by_user_id(uid(2)).authentication.fido2_methods
        await methods.by_fido2_authentication_method_id(keys(stack, 2)[0]["id"]).delete()
        again = await track_flags(stack.services)
        assert again["detailsPending"] == 1 and (await stack.flag(uid(2))) == before  # not cleared meanwhile
