"""The delta sweep: it catches renames whose notification was lost, resumes from its checkpoint after a
crash, and on a full re-read queues only the changed users, each with its old UPN."""
from __future__ import annotations

from shared.upn.sweep import sweep
from tests.conftest import graph_waits_move_the_clock
from tests.e2e.stack import eventually, running_stack, tenant, uid, user
from tests.upn.stack_steps import rename, subscribe


async def test_a_sweep_catches_a_rename_whose_notification_was_dropped(azurite):
    """Graph loses the notification; the delta sweep still finds the rename and it ends as a flag."""
    async with running_stack(azurite, tenant([user(n) for n in range(1, 6)])) as stack:
        await sweep(stack.services)
        await subscribe(stack)
        stack.sim.configure(notify_drop_rate=1.0)
        await rename(stack, 3, "user3@fabrikam.example")
        result = await sweep(stack.services)
        assert result["messagesQueued"] == 1 and not result["seeded"]
        flag = await eventually(lambda: stack.settled_flag(uid(3)))
        assert flag["source"] == "sweep" and flag["newUpn"] == "user3@fabrikam.example"
        assert len(await stack.all_flags()) == 1


async def test_a_crash_mid_sweep_resumes_without_missing_anyone(azurite, monkeypatch):
    """A sweep that dies after some pages resumes from its checkpoint; every renamed user is flagged."""
    users = [user(n) for n in range(1, 41)]
    doc = tenant(users)
    doc["simulator"]["delta_page_size"] = 5
    async with running_stack(azurite, doc) as stack:
        graph_waits_move_the_clock(stack.sim, monkeypatch)  # 20 passkey reads at Graph's 6 a second
        await sweep(stack.services)
        renamed = list(range(1, 41, 2))
        for n in renamed:
            await rename(stack, n, f"user{n}@fabrikam.example")
        first = await sweep(stack.services, max_pages=2)  # the process "dies" after two pages
        assert not first["complete"]
        stack.sim.configure(fault_drop_rate=1.0)           # and the next attempt fails on Graph
        try:
            await sweep(stack.services)
            raise AssertionError("the sweep should have failed while Graph dropped connections")
        except Exception as exc:
            assert getattr(exc, "code", "") == "graphUnavailable"
        stack.sim.configure(fault_drop_rate=0.0)
        rest = await sweep(stack.services)                  # resumes where the checkpoint says
        assert rest["complete"]

        async def all_flagged() -> bool:
            return {f["userId"] for f in await stack.all_flags()} == {uid(n) for n in renamed}

        await eventually(all_flagged)
        assert first["pages"] + rest["pages"] <= 6  # nothing was read twice but the page in flight


def _capture_messages(monkeypatch, *, fail_on_call: int | None = None) -> list[dict]:
    """Record every users message the sweep queues; optionally die (like a killed process) on one send."""
    import shared.upn.sweep as sweep_module

    sent: list[dict] = []
    real = sweep_module.send_messages
    calls = {"n": 0}

    async def spy(services, messages, *, delay=0):
        calls["n"] += 1
        if fail_on_call is not None and calls["n"] == fail_on_call:
            raise RuntimeError("process killed mid-sweep")
        sent.extend(messages)
        await real(services, messages, delay=delay)

    monkeypatch.setattr(sweep_module, "send_messages", spy)
    return sent


async def test_a_full_resync_queues_only_changed_users_with_their_old_upn(azurite, monkeypatch):
    """The sweep compares in memory: on a full re-read only renamed users are queued, each carrying its
    old UPN; unchanged users cost no message; a user without a snapshot gets one written, unflagged."""
    async with running_stack(azurite, tenant([user(n) for n in range(1, 21)])) as stack:
        await sweep(stack.services)
        for n in (3, 5):
            await rename(stack, n, f"user{n}@fabrikam.example")
        await stack.services.store.snapshots.delete([uid(7)])  # never seen before
        stack.sim.invalidate_delta()  # the next sweep reads every user again
        sent = _capture_messages(monkeypatch)
        result = await sweep(stack.services)
        assert result["resyncs"] == 1 and result["complete"]
        entries = [u for m in sent for u in m["users"]]
        assert all(entry.pop("seenAt").endswith("Z") for entry in entries)  # when the sweep read that UPN
        # and when the snapshot had last seen the old one, so the processor need not read the row again
        assert all(entry.pop("oldUpnSeenAt").endswith("Z") for entry in entries)
        assert sorted(entries, key=lambda e: e["id"]) == [
            {"id": uid(n), "upn": f"user{n}@fabrikam.example", "oldUpn": f"user{n}@contoso.example"} for n in (3, 5)]
        assert await stack.services.store.snapshots.get([uid(7)]) == {uid(7): "user7@contoso.example"}

        async def both_flagged() -> bool:
            return {f["userId"] for f in await stack.all_flags()} == {uid(3), uid(5)}

        await eventually(both_flagged)
        flag = await stack.flag(uid(3))
        assert flag["oldUpn"] == "user3@contoso.example" and flag["newUpn"] == "user3@fabrikam.example"
        snaps = await stack.services.store.snapshots.get([uid(3), uid(5), uid(1)])
        assert snaps == {uid(3): "user3@fabrikam.example", uid(5): "user5@fabrikam.example",
                         uid(1): "user1@contoso.example"}


async def test_a_sweep_killed_while_holding_users_resumes_and_misses_no_one(azurite, monkeypatch):
    """A full re-read dies on its second send, with changed users held in memory and new snapshots
    already written; the resumed sweep reloads the snapshots, re-reads from the checkpoint and every
    renamed user ends with exactly one flag, no unchanged user ever queued."""
    users = [user(n) for n in range(1, 61)]
    doc = tenant(users)
    doc["simulator"]["delta_page_size"] = 5
    async with running_stack(azurite, doc) as stack:
        graph_waits_move_the_clock(stack.sim, monkeypatch)  # 20 passkey reads at Graph's 6 a second
        await sweep(stack.services)
        renamed = list(range(1, 61, 3))
        for n in renamed:
            await rename(stack, n, f"user{n}@fabrikam.example")
        await stack.services.store.snapshots.delete([uid(2), uid(59)])
        stack.sim.invalidate_delta()
        sent = _capture_messages(monkeypatch, fail_on_call=2)
        try:
            await sweep(stack.services)
            raise AssertionError("the sweep should have died")
        except RuntimeError as exc:
            assert "killed" in str(exc)
        rest = await sweep(stack.services)
        assert rest["complete"]
        queued = [u["id"] for m in sent for u in m["users"]]
        assert set(queued) <= {uid(n) for n in renamed}  # nobody unchanged was queued

        async def all_flagged() -> bool:
            return {f["userId"] for f in await stack.all_flags()} == {uid(n) for n in renamed}

        await eventually(all_flagged)
        assert len(await stack.all_flags()) == len(renamed)
        snaps = await stack.services.store.snapshots.load_all()
        assert snaps == {uid(n): f"user{n}@{'fabrikam' if n in renamed else 'contoso'}.example" for n in range(1, 61)}


async def test_the_next_delta_page_is_requested_while_the_current_one_is_handled(azurite, monkeypatch):
    """The sweep is pipelined: while it handles a page, Graph has already answered its request for the next
    one. A sweep that read one page after the other would never see that here, and the wait would fail."""
    import asyncio

    from shared.upn.sweep import _SweepRun

    doc = tenant([user(n) for n in range(1, 13)])
    doc["simulator"]["delta_page_size"] = 3
    async with running_stack(azurite, doc) as stack:
        real_take = _SweepRun.take
        overlapped: list[int] = []

        async def take(run, page, read_at, *, last):
            if not last:
                async def next_page_answered() -> bool:
                    stats = await asyncio.to_thread(stack.sim.stats)
                    return stats["delta_pages"] >= run.pages + 2  # this page is number run.pages + 1
                await eventually(next_page_answered, timeout=30)
                overlapped.append(run.pages + 1)
            await real_take(run, page, read_at, last=last)

        monkeypatch.setattr(_SweepRun, "take", take)
        stack.sim.reset_stats()
        result = await sweep(stack.services)
        assert result["complete"] and result["users"] == 12
        assert overlapped == list(range(1, result["pages"])) and result["pages"] >= 4
        assert (await asyncio.to_thread(stack.sim.stats))["delta_pages"] == result["pages"]  # none read twice
