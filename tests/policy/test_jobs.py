"""Plan and apply as jobs: refused at once when the request can be (audit mode, ad-hoc document, bad document,
acceptance for another plan), else one `queued` run row and one `{runId, tenantId, kind}` message; the queue
trigger's `run_job` runs each job once, drops what is not its own, and records how the job ended on its run."""
from __future__ import annotations

import json
from typing import Any

import pytest

from shared.actors import Actor
from shared.errors import AcceptanceMismatch, AdhocDocumentRefused, AuditModeRefused, InputError
from shared.policy import planning
from shared.policy.apply import apply_stored_plan
from shared.policy.document import desired_to_json
from shared.policy.inputs import load_desired
from shared.policy.jobs import (
    public_run,
    refuse_adhoc_document,
    refuse_in_audit_mode,
    run_job,
    submit_apply,
    submit_plan,
)
from shared.services import Services

ADMIN = Actor("Ada Admin", "0a0a0a0a-0000-4000-8000-00000000000a")


async def queued_job(services: Services, run_id: str) -> bytes:
    """The message `submit_*` put on the policy-jobs queue for `run_id`, as the queue trigger would get it."""
    for message in await services.store.policy_jobs.receive(32, visibility_timeout=1):
        if message.body and message.body.get("runId") == run_id:
            await services.store.policy_jobs.delete(message)
            return message.text.encode()
    raise AssertionError(f"no policy job queued for run {run_id}")


def job(services: Services, run_id: str, kind: str = "plan", tenant: str | None = None) -> bytes:
    return json.dumps({"runId": run_id, "tenantId": tenant or services.settings.tenant_id, "kind": kind}).encode()


async def planned(services: Services) -> str:
    """Queue a plan of the deployed document, run its job, and return the plan id."""
    queued = await submit_plan(services)
    assert (await run_job(services, await queued_job(services, queued["runId"])))["result"] == "planned"
    return str((await services.store.runs.get(queued["runId"]))["planId"])


async def test_a_plan_is_queued_as_a_run_naming_who_asked(use_case_stack: Any) -> None:
    """submit_plan writes one queued run (the requester, the normalised document) and queues its id, kind and
    tenant; the run shows as `queued` and without the request it carries."""
    services, sim = await use_case_stack()
    queued = await submit_plan(services, actor=ADMIN)
    assert queued == {"runId": queued["runId"], "kind": "plan", "status": "queued"}
    message = json.loads(await queued_job(services, queued["runId"]))
    assert message == {"runId": queued["runId"], "tenantId": services.settings.tenant_id, "kind": "plan"}
    run = await services.store.runs.get(queued["runId"])
    assert run["result"] == "queued" and run["actor"]["name"] == "Ada Admin" and run["trigger"] == "http"
    assert run["request"] == {"desired": desired_to_json(load_desired(services))}
    shown = public_run(run)
    assert shown["status"] == "queued" and "request" not in shown and shown["runId"] == queued["runId"]
    assert sim.stats()["writes"] == 0


async def test_a_bad_or_adhoc_document_is_refused_before_anything_is_queued(use_case_stack: Any) -> None:
    """An ad-hoc document is refused unless ALLOW_ADHOC_DOCUMENTS is on; where it is, a bad one is an InputError;
    neither leaves a run behind."""
    services, _ = await use_case_stack()
    with pytest.raises(AdhocDocumentRefused):
        await submit_plan(services, {"passkeyMethod": {}})
    refuse_adhoc_document(services, None)  # no document: the deployed POLICY_FILE, always allowed
    open_services, _ = await use_case_stack(ALLOW_ADHOC_DOCUMENTS="true")
    with pytest.raises(InputError):
        await submit_plan(open_services, {"passkeyMethod": 1})
    for each in (services, open_services):
        assert (await each.store.runs.page(limit=5))[0] == []


async def test_a_job_runs_once_however_often_it_is_delivered(use_case_stack: Any) -> None:
    """The first delivery plans and records `planned` with the plan id; a second delivery of the same message is
    a duplicate that reads nothing from Graph."""
    services, sim = await use_case_stack()
    queued = await submit_plan(services)
    body = await queued_job(services, queued["runId"])
    assert await run_job(services, body) == {"runId": queued["runId"], "result": "planned"}
    run = await services.store.runs.get(queued["runId"])
    assert run["result"] == "planned" and run["planId"] and public_run(run)["status"] == "done"
    sim.reset_stats()
    assert await run_job(services, body) == {"runId": queued["runId"], "result": "duplicate"}
    assert sim.stats()["calls"]["total"] == 0
    assert (await services.store.runs.get(queued["runId"]))["planId"] == run["planId"]


async def test_what_is_not_this_apps_job_is_dropped(use_case_stack: Any) -> None:
    """Not a job message, another tenant's job, or a job whose run row does not exist: dropped, nothing run."""
    services, sim = await use_case_stack()
    queued = await submit_plan(services)
    other = "99999999-8888-4777-8666-555555555555"
    assert await run_job(services, b"not json") == {"result": "dropped"}
    assert await run_job(services, b'{"runId": "r", "kind": "sweep"}') == {"result": "dropped"}
    assert await run_job(services, job(services, queued["runId"], tenant=other)) == {"runId": queued["runId"],
                                                                                    "result": "dropped"}
    missing = "f" * 32
    assert await run_job(services, job(services, missing)) == {"runId": missing, "result": "dropped"}
    assert (await services.store.runs.get(queued["runId"]))["result"] == "queued"  # still waiting for its own
    assert sim.stats()["writes"] == 0


async def test_audit_mode_refuses_an_apply_before_reading_anything(use_case_stack: Any) -> None:
    """In audit mode (the default) the app applies nothing: the refusal comes before the plan is even looked up
    (an unknown plan id would otherwise be notFound) and before any Graph call."""
    services, sim = await use_case_stack()
    assert services.settings.enforcement_mode == "audit"
    sim.reset_stats()
    with pytest.raises(AuditModeRefused, match="ENFORCEMENT_MODE is audit"):
        await submit_apply(services, "no-such-plan", accept_lockout=None, accept_no_emergency_exclusion=None)
    assert sim.stats()["calls"]["total"] == 0
    enforcing, _ = await use_case_stack(ENFORCEMENT_MODE="enforce")
    refuse_in_audit_mode(enforcing, "apply policy plans")  # an enforcing app passes the gate


async def test_an_acceptance_holds_only_for_the_plan_it_names(use_case_stack: Any) -> None:
    """acceptLockout or acceptNoEmergencyExclusion naming another plan is refused, and nothing is queued."""
    services, _ = await use_case_stack(ENFORCEMENT_MODE="enforce")
    plan_id = await planned(services)
    runs_before = len((await services.store.runs.page(limit=10))[0])
    for accept in ({"accept_lockout": {"planId": "another", "users": 0}, "accept_no_emergency_exclusion": None},
                   {"accept_lockout": None, "accept_no_emergency_exclusion": {"planId": "another"}}):
        with pytest.raises(AcceptanceMismatch, match="another"):
            await submit_apply(services, plan_id, **accept)
    assert len((await services.store.runs.page(limit=10))[0]) == runs_before


async def test_an_apply_job_refused_when_it_runs_says_why_on_its_run(use_case_stack: Any) -> None:
    """An apply queued for a plan that was applied (from the CLI) before its job ran is refused then: the run says
    `refused` with the error's code, and the tenant gets no second write."""
    services, sim = await use_case_stack(ENFORCEMENT_MODE="enforce")
    plan_id = await planned(services)
    queued = await submit_apply(services, plan_id, accept_lockout=None, accept_no_emergency_exclusion=None)
    assert queued["kind"] == "apply" and queued["status"] == "queued"
    assert (await apply_stored_plan(services, plan_id, accept_lockout=False, trigger="cli"))["result"] == "applied"
    writes = sim.stats()["writes"]
    ended = await run_job(services, await queued_job(services, queued["runId"]))
    assert ended == {"runId": queued["runId"], "result": "refused", "error": "conflict"}
    run = await services.store.runs.get(queued["runId"])
    assert run["result"] == "refused" and run["error"]["code"] == "conflict" and plan_id in run["error"]["message"]
    assert sim.stats()["writes"] == writes


async def test_an_unexpected_failure_is_recorded_without_its_details(use_case_stack: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A job that fails with a bug is `failed` with `internalError` and a message pointing to the logs; the
    exception's text (which may hold anything) is not copied onto the run."""
    services, _ = await use_case_stack()
    queued = await submit_plan(services)

    async def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("secret-looking internals")

    monkeypatch.setattr(planning, "plan", broken)
    ended = await run_job(services, await queued_job(services, queued["runId"]))
    assert ended == {"runId": queued["runId"], "result": "failed", "error": "internalError"}
    run = await services.store.runs.get(queued["runId"])
    assert run["result"] == "failed" and run["error"]["code"] == "internalError"
    assert "secret-looking" not in json.dumps(run["error"])


def test_a_runs_status_is_queued_running_or_done() -> None:
    """GET /api/runs/{runId} shows `queued` and `running` as they are and any outcome as `done`."""
    from datetime import UTC, datetime

    started = datetime(2026, 1, 1, tzinfo=UTC)
    for result, status in (("queued", "queued"), ("running", "running"), ("planned", "done"), ("failed", "done")):
        shown = public_run({"id": "r", "kind": "plan", "started_at": started, "result": result, "request": {}})
        assert shown["status"] == status and shown["result"] == result and "request" not in shown
