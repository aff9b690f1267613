"""A sweep is a run people can follow: its run record, read back from Azurite at the end of each delta page
while the sweep works, shows the users read so far, the pages, the changed users queued, the RU spent and,
when the total is honestly known (Graph's user count when seeding, the stored snapshots on a full re-read),
an ETA; a read of changes says its total is unknown. The finished record holds the result and the counts."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import shared.progress as progress_module
from shared.actors import SIGNED_IN_ADMINISTRATOR
from shared.errors import GraphError
from shared.upn.sweep import sweep
from tests.e2e.stack import running_stack, tenant, user
from tests.upn.stack_steps import rename

USERS, PAGE = 40, 5


def paged_tenant() -> dict[str, Any]:
    doc = tenant([user(n) for n in range(1, USERS + 1)])
    doc["simulator"]["delta_page_size"] = PAGE
    return doc


def follow_the_run(stack: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """At the end of each page, a second passes on the progress's clock (so each page's update is due) and the
    sweep's run record is read back from Azurite. Returns the records as read, in order."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    seen: list[dict[str, Any]] = []
    real_advance = progress_module.Progress.advance

    async def advance(self: progress_module.Progress, done: int, **kwargs: Any) -> None:
        clock.now += 1.0
        await real_advance(self, done, **kwargs)
        [newest], _ = await stack.services.store.runs.page(limit=1)
        seen.append(newest)

    monkeypatch.setattr(progress_module.Progress, "advance", advance)
    return seen


async def test_a_seeding_sweep_shows_its_progress_page_by_page_with_an_eta(azurite, monkeypatch):
    """The first run's total is Graph's user count: each page's record shows more users read, more pages
    and RU spent, and an ETA from the rate so far that reaches 0 with the last page; the final record
    says complete with the sweep's counts."""
    async with running_stack(azurite, paged_tenant()) as stack:
        seen = follow_the_run(stack, monkeypatch)
        result = await sweep(stack.services, trigger="test")
        assert result["seeded"] and result["pages"] == USERS // PAGE
        running = [r for r in seen if r["result"] == "running"]
        assert len(running) == USERS // PAGE, [r["result"] for r in seen]
        progress = [r["progress"] for r in running]
        assert [p["done"] for p in progress] == list(range(PAGE, USERS + 1, PAGE))
        assert all(p["phase"] == "seeding" and p["total"] == USERS and p["unit"] == "users" for p in progress)
        assert [p["counts"]["pages"] for p in progress] == list(range(1, USERS // PAGE + 1))
        # a second a page, 5 users a page: what is left at that rate
        assert [p["etaSeconds"] for p in progress] == [(USERS - p["done"]) // PAGE for p in progress]
        assert [p["percent"] for p in progress] == [100 * p["done"] / USERS for p in progress]
        spent = [p["ruSpent"] for p in progress]
        assert spent == sorted(spent) and spent[0] > 0  # the count and the delta pages are charged
        assert all(r["id"] == result["runId"] and r["kind"] == "sweep" for r in running)
        final = await stack.services.store.runs.get(result["runId"])
        assert final["result"] == "complete" and final["trigger"] == "test"
        assert final["actor"] == {"name": "the app"} and final["mode"] == stack.services.settings.enforcement_mode
        assert {k: final[k] for k in ("pages", "users", "changedUsers", "messagesQueued", "complete", "seeded")} == {
            "pages": USERS // PAGE, "users": USERS, "changedUsers": 0, "messagesQueued": 0, "complete": True,
            "seeded": True}
        assert final["progress"]["done"] == USERS and final["progress"]["etaSeconds"] is None
        counted = stack.sim.stats()["calls"]["by_route"]
        assert counted.get("GET /users") == 1  # the count: one request for the whole run


async def test_a_read_of_changes_has_no_total_and_no_eta(azurite, monkeypatch):
    """An incremental delta run cannot know how many changes Graph holds: total and ETA stay unknown while
    the users read and the changed users queued grow page by page."""
    async with running_stack(azurite, paged_tenant()) as stack:
        await sweep(stack.services)
        renamed = list(range(1, USERS + 1, 2))
        for n in renamed:
            await rename(stack, n, f"user{n}@fabrikam.example")
        seen = follow_the_run(stack, monkeypatch)
        result = await sweep(stack.services, trigger="test")
        progress = [r["progress"] for r in seen if r["result"] == "running"]
        assert len(progress) == result["pages"] >= 2
        assert all(p["phase"] == "reading changes" and p["total"] is None and p["etaSeconds"] is None
                   and p["percent"] is None for p in progress)
        done = [p["done"] for p in progress]
        assert done == sorted(done) and done[-1] == len(renamed) and len(set(done)) == len(done)
        changed = [p["counts"]["changedUsers"] for p in progress]
        assert changed == sorted(changed) and changed[-1] == result["changedUsers"] == len(renamed)
        final = await stack.services.store.runs.get(result["runId"])
        assert final["result"] == "complete" and final["changedUsers"] == len(renamed)
        assert final["messagesQueued"] == result["messagesQueued"] >= 1


async def test_a_full_resync_takes_its_total_from_the_stored_snapshots(azurite, monkeypatch):
    """Graph forgot the delta token: the re-read of every user counts against the snapshots held in memory."""
    async with running_stack(azurite, paged_tenant()) as stack:
        await sweep(stack.services)
        stack.sim.invalidate_delta()
        seen = follow_the_run(stack, monkeypatch)
        result = await sweep(stack.services, trigger="test")
        assert result["resyncs"] == 1
        progress = [r["progress"] for r in seen if r["result"] == "running"]
        assert all(p["phase"] == "resync" and p["total"] == USERS for p in progress)
        assert progress[-1]["done"] == USERS and progress[-1]["etaSeconds"] == 0
        assert all(p["etaSeconds"] is not None for p in progress)


async def test_a_user_count_graph_refuses_leaves_the_total_unknown_and_the_sweep_whole(azurite, monkeypatch):
    """Graph does not answer the count: the seeding says its total is unknown (no invented ETA) and seeds."""
    import shared.graph.users as users_module

    async def refused(graph: Any) -> int:
        raise GraphError("Graph refused the count", status_code=400)

    monkeypatch.setattr(users_module, "count_users", refused)
    async with running_stack(azurite, paged_tenant()) as stack:
        seen = follow_the_run(stack, monkeypatch)
        result = await sweep(stack.services)
        assert result["seeded"] and result["complete"] and result["users"] == USERS
        progress = [r["progress"] for r in seen if r["result"] == "running"]
        assert progress and all(p["total"] is None and p["etaSeconds"] is None for p in progress)


async def test_a_failed_sweep_is_recorded_with_its_error_and_how_far_it_got(azurite):
    """Graph drops every connection after the seeding: the sweep raises as before, and its run says failed,
    with the error's code and the pages it had read."""
    async with running_stack(azurite, paged_tenant()) as stack:
        await sweep(stack.services)
        stack.sim.configure(fault_drop_rate=1.0)
        with pytest.raises(GraphError) as caught:
            await sweep(stack.services, trigger="test", actor=SIGNED_IN_ADMINISTRATOR)
        stack.sim.configure(fault_drop_rate=0.0)
        [newest], _ = await stack.services.store.runs.page(limit=1)
        assert newest["kind"] == "sweep" and newest["result"] == "failed"
        assert newest["error"]["code"] == caught.value.code == "graphUnavailable"
        assert newest["pages"] == 0
        # the administrator is named from the Graph token (this app-only test token names no one); not the app
        assert newest["actor"] == {"name": "administrator (not named by the token)"} and "mode" not in newest


async def test_each_sweep_is_its_own_run_and_its_messages_carry_its_id(azurite, monkeypatch):
    """The processor's logs join the sweep's run: the queued message names the run the sweep recorded."""
    async with running_stack(azurite, paged_tenant(), drain=False) as stack:
        first = await sweep(stack.services)
        await rename(stack, 3, "user3@fabrikam.example")
        sent: list[dict[str, Any]] = []
        real_send = stack.services.store.queue.send

        async def spy(messages: list[dict[str, Any]], **kwargs: Any) -> None:
            sent.extend(messages)
            await real_send(messages, **kwargs)

        monkeypatch.setattr(stack.services.store.queue, "send", spy)
        second = await sweep(stack.services)
        assert first["runId"] != second["runId"]
        assert [m["runId"] for m in sent] == [second["runId"]]
        assert (await stack.services.store.runs.get(second["runId"]))["messagesQueued"] == 1
