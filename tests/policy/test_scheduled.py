"""The scheduled run: audit mode verifies; enforce mode applies what is safe and otherwise verifies and says why."""
from __future__ import annotations

from shared.policy.scheduled import scheduled_run


async def test_audit_mode_only_verifies(use_case_stack):
    """In audit mode the timer verifies and writes nothing to Graph; a late run says so in its trigger."""
    services, sim = await use_case_stack(ENFORCEMENT_MODE="audit")
    result = await scheduled_run(services, past_due=True)
    run = await services.store.runs.get(result["runId"])
    assert run["kind"] == "verify" and run["trigger"] == "timer-late" and sim.stats()["writes"] == 0


async def test_enforce_mode_applies_a_safe_plan(use_case_stack):
    """In enforce mode a plan that needs nobody's acceptance is applied by the timer."""
    services, sim = await use_case_stack(ENFORCEMENT_MODE="enforce")
    result = await scheduled_run(services)
    assert result["result"] == "applied" and sim.stats()["writes"] > 0
