"""The plan use case: a stored plan with the hash of the state it was made from, shown as JSON, table and Markdown."""
from __future__ import annotations

from shared.policy.plan_codec import plan_from_json
from shared.policy.planning import plan


async def test_a_plan_is_stored_recorded_and_shown(use_case_stack):
    """plan() stores the plan under its id, records a planned run, writes nothing, and shows it three ways."""
    services, sim = await use_case_stack()
    result = await plan(services, trigger="test")
    stored = await services.store.plans.get(result["planId"])
    assert plan_from_json(stored["plan"]["plan"]).state_hash == result["plan"]["stateHash"]
    assert result["plan"]["writes"] and all("path" in w and "method" in w for w in result["plan"]["writes"])
    assert result["table"].startswith("Plan (legacy mode") and result["markdown"].startswith("# Passkey Guard plan")
    run = await services.store.runs.get(result["runId"])
    assert run["result"] == "planned" and run["planId"] == result["planId"] and sim.stats()["writes"] == 0
