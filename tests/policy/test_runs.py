"""The runs table from the use cases' side: one recorded row per run, listed newest first as people see it."""
from __future__ import annotations

from datetime import UTC, datetime

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
