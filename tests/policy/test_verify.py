"""The verify use case: checks against the live tenant, a recorded run, and the allow-list kept for PG-FIDO2-007."""
from __future__ import annotations

from shared.policy.apply import apply_document
from shared.policy.verify import POLICY_CHECKPOINT, verify


async def test_a_fresh_tenant_fails_and_the_run_records_the_report(use_case_stack):
    """Before any apply the tenant lacks the Authenticator AAGUIDs: verify fails, with Markdown and a run row."""
    services, sim = await use_case_stack()
    report = await verify(services, trigger="test")
    assert report["result"] == "failed" and not report["passed"] and "NOT COMPLIANT" in report["markdown"]
    run = await services.store.runs.get(report["runId"])
    assert run["kind"] == "verify" and run["report"]["passed"] is False and sim.stats()["writes"] == 0


async def test_verify_after_apply_passes_and_keeps_the_allow_list_seen(use_case_stack):
    """After an apply, verify passes and the checkpoint holds the allow-list it saw."""
    services, _ = await use_case_stack()
    await apply_document(services, trigger="test")
    report = await verify(services, trigger="test")
    assert report["passed"], report["markdown"]
    seen, _ = await services.store.checkpoints.get(POLICY_CHECKPOINT)
    assert seen is not None and len(seen["allowedAaguids"]) == 3


async def test_the_report_after_apply_shows_where_peer_checks_differ(use_case_stack):
    """After an apply the attestation check passes, and both the JSON and the Markdown the run keeps show
    Maester's EIDSCA.AF03 beside it as `differs`, so a failing AF03 in Maester is expected, not drift."""
    services, _ = await use_case_stack()
    await apply_document(services, trigger="test")
    report = await verify(services, trigger="test")
    attestation = next(c for c in report["checks"] if c["id"] == "PG-FIDO2-004")
    af03 = next(p for p in attestation["peers"] if p["id"] == "EIDSCA.AF03")
    assert attestation["status"] == "passed" and af03["relation"] == "differs"
    run = await services.store.runs.get(report["runId"])
    assert "Maester EIDSCA.AF03 (differs)" in run["report"]["markdown"]
    assert f"PG-FIDO2-004 vs Maester `EIDSCA.AF03`, differs: {af03['note']}" in run["report"]["markdown"]
