"""The runs table from the use cases' side: one recorded row per run, listed newest first as people see it."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.policy.runs import RunRecorder, list_runs, public_run


def test_a_public_run_names_its_id_and_start_as_text():
    """`id` shows as `runId` and the start time as ISO text; the raw datetime field is not shown."""
    shown = public_run({"id": "r1", "kind": "plan", "started_at": datetime(2026, 1, 2, 3, 4, tzinfo=UTC)})
    assert shown == {"runId": "r1", "kind": "plan", "startedAt": "2026-01-02T03:04:00+00:00"}


async def test_a_recorded_run_is_listed_with_its_outcome_and_graph_calls(use_case_stack):
    """finish() writes the row with result, Graph call count and duration; list_runs shows it."""
    services, _ = await use_case_stack()
    recorder = RunRecorder(services, "verify", "test")
    run = await recorder.finish("passed", note="x")
    assert run["result"] == "passed" and run["graphCalls"] >= 0 and run["durationMs"] >= 0
    listed = await list_runs(services, limit=5)
    assert [r["runId"] for r in listed["value"]] == [recorder.id] and listed["value"][0]["note"] == "x"


async def test_a_run_shows_its_progress_while_it_works_and_keeps_it_when_it_ends(use_case_stack):
    """The first progress update writes a `running` row naming who acted; finish() writes the result with
    the last progress, without an ETA."""
    services, _ = await use_case_stack()
    recorder = RunRecorder(services, "apply", "timer")
    await recorder.progress.begin("writes", unit="writes", total=3)
    running = await services.store.runs.get(recorder.id)
    assert running["result"] == "running" and running["actor"] == {"name": "the app"}
    assert running["progress"]["phase"] == "writes" and running["progress"]["total"] == 3
    assert running["progress"]["done"] == 0 and running["progress"]["etaSeconds"] is None
    await recorder.progress.advance(3)
    await recorder.finish("applied")
    done = await services.store.runs.get(recorder.id)
    assert done["result"] == "applied" and done["progress"]["done"] == 3 and done["progress"]["etaSeconds"] is None
    listed = await list_runs(services, limit=5)
    assert [r["runId"] for r in listed["value"]] == [recorder.id]  # one row, updated in place


async def test_a_failing_progress_write_does_not_fail_the_run_and_the_result_is_still_written(use_case_stack,
                                                                                              monkeypatch):
    """Storage refuses the progress row: the use case goes on, and finish() still writes the result."""
    from shared.errors import StateError

    services, _ = await use_case_stack()
    real_put = services.store.runs.put
    calls: list[str] = []

    async def refuse_running(run):
        calls.append(run.get("result", "?"))
        if run.get("result") == "running":
            raise StateError("storage is unavailable")
        await real_put(run)

    monkeypatch.setattr(services.store.runs, "put", refuse_running)
    recorder = RunRecorder(services, "sweep", "timer")
    await recorder.progress.begin("seeding", unit="users", total=10)
    await recorder.finish("complete", users=10)
    assert calls == ["running", "complete"]
    stored = await services.store.runs.get(recorder.id)
    assert stored["result"] == "complete" and stored["users"] == 10 and stored["progress"]["total"] == 10


async def test_a_run_stopped_by_an_error_after_showing_progress_ends_refused_or_failed(use_case_stack):
    """An error after the row showed `running` ends it refused (a 4xx refusal) or failed, with the error; a run
    that never showed progress writes no row (as before), and a finished run is not written again."""
    from shared.errors import ConflictError, GraphUnavailable, NotFound

    services, _ = await use_case_stack()
    quiet = RunRecorder(services, "apply", "timer")
    await quiet.stopped(ConflictError("another apply is running"))
    with pytest.raises(NotFound):
        await services.store.runs.get(quiet.id)
    refused = RunRecorder(services, "apply", "timer")
    await refused.progress.begin("lockout evaluation", unit="users", total=3)
    await refused.stopped(ConflictError("the tenant changed since this plan was made"))
    row = await services.store.runs.get(refused.id)
    assert row["result"] == "refused" and row["error"]["code"] == "conflict"
    failed = RunRecorder(services, "sweep", "timer")
    await failed.progress.begin("seeding", unit="users")
    await failed.finish("failed", error={"code": "x", "message": "recorded by the use case"})
    await failed.stopped(GraphUnavailable("Graph did not answer"))
    assert (await services.store.runs.get(failed.id))["error"]["code"] == "x"
    broken = RunRecorder(services, "plan", "timer")
    await broken.progress.begin("reading the tenant", unit="reads")
    await broken.stopped(KeyError("bug"))
    assert (await services.store.runs.get(broken.id))["error"]["code"] == "internalError"
