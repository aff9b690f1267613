"""Flag fast, enrich slowly: the processor flags the users the registration report lists as passkey holders at
once (details pending) and leaves every changed user's passkeys to the slow lane, which completes those flags
and flags anyone the report did not know yet. Through the real stack: the simulator over HTTP, Azurite, the
served app's queue triggers."""
from __future__ import annotations

import json
from typing import Any

from shared.upn.dispatch import handle_message, handle_passkey_message
from shared.upn.messages import users_message
from shared.upn.sweep import sweep
from tests.e2e.stack import Stack, eventually, running_stack, tenant, uid, user
from tests.upn.stack_steps import as_tenant_admin, rename

FIDO2_ROUTE = "users/{id}/authentication/fido2Methods"


def _fido2_reads(stack: Stack) -> int:
    return sum(n for route, n in stack.sim.stats()["calls"]["by_route"].items() if FIDO2_ROUTE in route)


async def _process(stack: Stack, *users: int) -> dict[str, Any]:
    """The processor's queue trigger on one `users` message naming these users by id (a notification's)."""
    message = {**users_message([{"id": uid(n)} for n in users], source="notification"), "tenant": stack.tenant_id}
    return await handle_message(stack.services, json.dumps(message))


async def _slow_lane(stack: Stack) -> list[dict[str, Any]]:
    """Every `passkey-reads` message the processor queued, handed to the slow lane's trigger."""
    queue = stack.services.store.passkey_reads
    results = []
    while batch := await queue.receive(32):
        for message in batch:
            results.append(await handle_passkey_message(stack.services, message.text))
            await queue.delete(message)
    return results


async def test_a_holder_is_flagged_before_any_passkey_read_and_completed_by_the_slow_lane(azurite):
    """The report lists user 1: the processor opens the flag at once, details pending, with no fido2Methods read;
    the slow lane reads the passkey and completes it. A second delivery of the slow lane's message changes
    nothing."""
    async with running_stack(azurite, tenant([user(1), user(2, key=None)]), drain=False) as stack:
        await sweep(stack.services)  # seeds the snapshots and builds the holders index from the report
        assert await stack.services.store.holders.get([uid(1), uid(2)]) == {uid(1)}
        await stack.services.store.queue.clear()
        await rename(stack, 1, "user1@fabrikam.example")
        stack.sim.reset_stats()

        result = await _process(stack, 1)
        assert result["flagged"] == [uid(1)] and _fido2_reads(stack) == 0
        flag = await stack.flag(uid(1))
        assert flag["passkeyDetails"] == "pending" and flag["passkeys"] == [] and flag["status"] == "pending"

        queued = await stack.services.store.passkey_reads.receive(32)
        assert len(queued) == 1
        text = queued[0].text
        await stack.services.store.passkey_reads.delete(queued[0])
        done = await handle_passkey_message(stack.services, text)
        assert done["decisions"] == {"completed": [uid(1)]} and _fido2_reads(stack) == 1
        flag = await stack.flag(uid(1))
        assert flag["passkeyDetails"] == "complete"
        assert [p["id"] for p in flag["passkeys"]] == [f"key1{'A' * 36}0"]

        again = await handle_passkey_message(stack.services, text)  # the same message delivered twice
        assert again["flagged"] == [] and await stack.flag(uid(1)) == flag


async def test_a_passkey_registered_after_the_reports_refresh_is_still_flagged(azurite):
    """User 2 had no passkey when the report was built; they register one, then are renamed. The report (and so
    the index) does not list them, but the slow lane reads their passkeys and flags them, details complete."""
    async with running_stack(azurite, tenant([user(1), user(2, key=None)]), drain=False) as stack:
        await sweep(stack.services)
        stack.sim.register_passkey(uid(2), displayName="New key", aaGuid="de1e552d-db1d-4423-a619-566b625cdc84")
        await sweep(stack.services)  # the report is unchanged (refreshed daily): the index still lacks user 2
        assert await stack.services.store.holders.get([uid(2)]) == set()
        await stack.services.store.queue.clear()
        await rename(stack, 2, "user2@fabrikam.example")

        result = await _process(stack, 2)
        assert result["flagged"] == [] and result["decisions"] == {"deferred": [uid(2)]}
        assert await stack.flag(uid(2)) is None
        (settled,) = await _slow_lane(stack)
        assert settled["flagged"] == [uid(2)]
        flag = await stack.flag(uid(2))
        assert flag["passkeyDetails"] == "complete" and flag["newUpn"] == "user2@fabrikam.example"
        assert len(flag["passkeys"]) == 1


async def test_a_rename_without_a_passkey_is_let_go_by_the_slow_lane(azurite):
    """Not in the report and no passkey when read: no flag, and the snapshot moved on."""
    async with running_stack(azurite, tenant([user(1), user(2, key=None)]), drain=False) as stack:
        await sweep(stack.services)
        await stack.services.store.queue.clear()
        await rename(stack, 2, "user2@fabrikam.example")
        await _process(stack, 2)
        (settled,) = await _slow_lane(stack)
        assert settled["decisions"] == {"no_passkey": [uid(2)]} and await stack.flag(uid(2)) is None
        assert (await stack.services.store.snapshots.get([uid(2)]))[uid(2)] == "user2@fabrikam.example"


async def test_a_holder_whose_passkey_is_gone_when_read_is_dismissed(azurite):
    """The report was out of date the other way: user 1 deleted their passkey after it was built. The flag opened
    from the report is dismissed once the slow lane finds no passkey."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        await stack.services.store.queue.clear()
        await as_tenant_admin(stack, "DELETE", f"/users/{uid(1)}/authentication/fido2Methods/key1{'A' * 36}0")
        await rename(stack, 1, "user1@fabrikam.example")
        await _process(stack, 1)
        assert (await stack.flag(uid(1)))["passkeyDetails"] == "pending"
        await _slow_lane(stack)
        flag = await stack.flag(uid(1))
        assert flag["status"] == "dismissed" and flag["passkeyDetails"] == "complete"


async def test_the_served_app_drains_both_lanes(azurite):
    """Through the host's queue triggers: a rename of a holder and of a user the report missed end as two flags
    with complete details."""
    async with running_stack(azurite, tenant([user(1), user(2, key=None)])) as stack:
        await sweep(stack.services)
        stack.sim.register_passkey(uid(2), displayName="New key", aaGuid="de1e552d-db1d-4423-a619-566b625cdc84")
        await rename(stack, 1, "user1@fabrikam.example")
        await rename(stack, 2, "user2@fabrikam.example")
        await sweep(stack.services)

        async def both_complete() -> bool:
            flags = [await stack.flag(uid(n)) for n in (1, 2)]
            return all(f is not None and f["passkeyDetails"] == "complete" for f in flags)

        await eventually(both_complete)


async def test_a_sweeps_run_shows_how_far_the_slow_lane_has_read_with_an_eta(azurite):
    """25 holders renamed: the sweep's run counts 25 changed users; after the slow lane's first message (20 users)
    GET /api/runs/{id} and `python -m shared runs` show 20 of 25 read with an ETA, after the second all 25 and no
    ETA."""
    from shared.__main__ import _run_text
    from shared.progress import describe_details

    async with running_stack(azurite, tenant([user(n) for n in range(1, 26)]), drain=False) as stack:
        await sweep(stack.services)
        await stack.services.store.queue.clear()
        stack.sim.control("POST", "users/bulk_rename", {"from_domain": "contoso.example",
                                                        "to_domain": "fabrikam.example", "notify": False})
        run_id = (await sweep(stack.services))["runId"]
        while batch := await stack.services.store.queue.receive(32):
            for message in batch:
                await handle_message(stack.services, message.text)
                await stack.services.store.queue.delete(message)
        lane = stack.services.store.passkey_reads
        slow = await lane.receive(32)
        assert sorted(len(json.loads(m.text)["users"]) for m in slow) == [5, 20]
        first = next(m for m in slow if len(json.loads(m.text)["users"]) == 20)
        await handle_passkey_message(stack.services, first.text)

        status, text, _ = await stack.get(f"runs/{run_id}")
        assert status == 200, text
        details = json.loads(text)["details"]
        assert (details["read"], details["total"], details["percent"]) == (20, 25, 80.0)
        assert isinstance(details["etaSeconds"], int) and details["etaSeconds"] >= 0
        assert "passkey details read for 20/25 users (80%), ETA " in describe_details(details)

        await handle_passkey_message(stack.services, next(m for m in slow if m is not first).text)
        status, text, _ = await stack.get(f"runs/{run_id}")
        run = json.loads(text)
        assert run["details"]["read"] == 25 and run["details"]["etaSeconds"] is None
        assert "details:  passkey details read for 25/25 users (100%)" in _run_text(run).splitlines()
        await lane.clear()
