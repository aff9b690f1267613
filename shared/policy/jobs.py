"""HTTP plan and apply as jobs: refuse what can be refused at once, queue the rest, report it as a run.

Flex Consumption answers an HTTP request within 230 s at most, and an apply (CA calls a second apart,
retries on 429, a lockout read over every user) can take longer. So `POST /api/policy/plan|apply` check
the request synchronously (strict body, audit mode, ad-hoc documents, unknown/applied/stale plan,
acceptances), write one `queued` run row with the request, queue `{runId, tenantId, kind}` on
`policy-jobs`, and answer 202 with the run id. The `policy_jobs` queue trigger runs the job under the
same run id, and `GET /api/runs/{runId}` shows its outcome: the plan id and diff, or the apply's result
or refusal (`error`).

A job message delivered twice runs once: the first delivery claims `policy-job|<runId>` in the events
table. A job is never retried automatically (an apply that failed half-way needs a person); its run
says `failed` or `refused` with the error, and the caller submits again.
"""
from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from shared.actors import THE_APP, Actor, run_fields
from shared.config import ALLOW_ADHOC_DOCUMENTS
from shared.errors import (
    AcceptanceMismatch,
    AdhocDocumentRefused,
    AuditModeRefused,
    ConflictError,
    InputError,
    NotFound,
    PasskeyGuardError,
)
from shared.policy.document import desired_to_json, validate_document
from shared.policy.plan import state_hash
from shared.policy.plan_codec import plan_from_json
from shared.services import Services

if TYPE_CHECKING:
    from shared.schemas.messages import PolicyJob

log = logging.getLogger(__name__)
JobKind = Literal["plan", "apply"]
JOB_CLAIM_SECONDS = 7 * 24 * 3600
QUEUED, RUNNING = "queued", "running"


def refuse_in_audit_mode(services: Services, what: str) -> None:
    """Every app-driven policy write (HTTP, queue, timer) stops here in audit mode; the CLI does not."""
    if services.settings.enforcement_mode != "enforce":
        raise AuditModeRefused(f"ENFORCEMENT_MODE is audit: the app does not {what}; nothing was written. "
                               "Set ENFORCEMENT_MODE=enforce, or apply from the CLI under your own sign-in")


def refuse_adhoc_document(services: Services, document: Any) -> None:
    """Over HTTP the desired state is the deployed POLICY_FILE, unless ALLOW_ADHOC_DOCUMENTS says otherwise."""
    if document is not None and not services.settings.allow_adhoc_documents:
        raise AdhocDocumentRefused(f"field 'document' is not accepted: the app plans only from its POLICY_FILE "
                                   f"({ALLOW_ADHOC_DOCUMENTS} is off)")


def public_run(run: dict[str, Any]) -> dict[str, Any]:
    """A run for GET /api/runs/{runId}: `status` queued, running or done, beside the run's fields."""
    from shared.policy.runs import public_run as _public_run

    out = _public_run(run)
    out.pop("request", None)
    out["status"] = run.get("result") if run.get("result") in (QUEUED, RUNNING) else "done"
    return out


def job_message(run_id: str, tenant_id: str, kind: JobKind) -> dict[str, Any]:
    """The `policy-jobs` message for a queued run, built from the model `run_job` reads it with."""
    from shared.schemas.messages import PolicyJob

    return PolicyJob(runId=run_id, tenantId=tenant_id, kind=kind).model_dump(mode="json")


async def _enqueue(services: Services, kind: JobKind, request: dict[str, Any], actor: Actor) -> dict[str, Any]:
    """The queued run row names the requester (`actor`), so the job's run records who asked for it."""
    tenant = services.settings.tenant_id
    run: dict[str, Any] = {"id": uuid.uuid4().hex, "kind": kind, **run_fields("http", actor,
                                                                               services.settings.enforcement_mode),
                           "started_at": datetime.now(UTC), "result": QUEUED, "request": request}
    await services.store.runs.put(run)
    try:
        await services.store.policy_jobs.send([job_message(run["id"], tenant, kind)])
    except PasskeyGuardError as exc:
        await services.store.runs.put({**run, "result": "failed", "error": exc.to_body()["error"]})
        raise
    log.info("policy %s job queued as run %s", kind, run["id"])
    return {"runId": run["id"], "kind": kind, "status": QUEUED}


async def submit_plan(services: Services, document: Any = None, *, actor: Actor = THE_APP) -> dict[str, Any]:
    """Check the desired state now (a bad document is a 400 here), then queue the plan."""
    from shared.policy.inputs import load_desired

    refuse_adhoc_document(services, document)
    desired = load_desired(services, document)
    await services.graph.confirm_tenant()  # the right tenant before any storage read or write (wrongTenant)
    return await _enqueue(services, "plan", {"desired": desired_to_json(desired)}, actor)


def _check_acceptance(name: str, accepted: dict[str, Any] | None, plan_id: str, what: str) -> None:
    if accepted is not None and accepted["planId"] != plan_id:
        raise AcceptanceMismatch(f"{name} names plan {accepted['planId']!r}, but this request applies plan "
                                 f"{plan_id!r} ({what}); an acceptance holds only for the plan it names")


async def submit_apply(services: Services, plan_id: str, *, accept_lockout: dict[str, Any] | None,
                       accept_no_emergency_exclusion: dict[str, Any] | None,
                       actor: Actor = THE_APP) -> dict[str, Any]:
    """Refuse at once what the stored plan already tells (audit mode, unknown, applied, blocked, stale,
    acceptance missing or not matching this plan and its number of users); queue the apply otherwise."""
    from shared.policy.apply import check_safe as _check_safe
    from shared.policy.apply import lockout_user_count
    from shared.policy.inputs import read_state

    refuse_in_audit_mode(services, "apply policy plans")
    stored = await services.store.plans.get(plan_id)
    if stored.get("applied"):
        raise ConflictError(f"plan {plan_id} was already applied")
    expected = plan_from_json(stored["plan"]["plan"])
    _check_acceptance("acceptLockout", accept_lockout, plan_id,
                      f"which locks out {lockout_user_count(expected)} user(s)")
    _check_acceptance("acceptNoEmergencyExclusion", accept_no_emergency_exclusion, plan_id,
                      f"which enforces {', '.join(expected.unexcluded_ca) or 'no'} unexcluded CA policy")
    users = accept_lockout["users"] if accept_lockout is not None else None
    if users is not None and users != lockout_user_count(expected):
        raise AcceptanceMismatch(f"acceptLockout is for {users} user(s), but plan {plan_id} locks out "
                                 f"{lockout_user_count(expected)} user(s); nothing was queued",
                                 detail={"accepted": users, "users": lockout_user_count(expected)})
    _check_safe(expected, accept_lockout=accept_lockout is not None, lockout_users=users,
                accept_no_emergency_exclusion=accept_no_emergency_exclusion is not None, plan_id=plan_id)
    desired = validate_document(stored["plan"]["desired"])
    live = await read_state(services, desired)
    live_hash = state_hash(desired, live.fido2, live.strengths, live.ca)
    if live_hash != expected.state_hash:
        raise ConflictError("the tenant changed since this plan was made; make a new plan",
                            detail={"planStateHash": expected.state_hash, "liveStateHash": live_hash})
    return await _enqueue(services, "apply", {"planId": plan_id, "acceptLockoutUsers": users,
                                              "acceptNoEmergencyExclusion": accept_no_emergency_exclusion is not None},
                          actor)


def _parse_message(body: bytes) -> PolicyJob | None:
    """The job a message names, or None (logged) when it is not `{runId, tenantId, kind}`."""
    from shared.schemas.messages import parse_policy_job

    try:
        return parse_policy_job(body)
    except InputError as exc:
        log.warning("dropped a policy job message: %s", exc.message)
        return None


async def run_job(services: Services, body: bytes) -> dict[str, Any]:
    """The queue trigger's use case: run one queued plan or apply once, and record how it ended."""
    from shared.policy.apply import apply_stored_plan
    from shared.policy.planning import plan

    tenant = services.settings.tenant_id
    message = _parse_message(body)
    if message is None:
        return {"result": "dropped"}
    run_id = message.runId
    if message.tenantId.lower() != tenant:
        log.warning("dropped policy job %s for another tenant", run_id)
        return {"runId": run_id, "result": "dropped"}
    try:
        queued = await services.store.runs.get(run_id)
    except NotFound:
        log.warning("dropped policy job %s: its run row does not exist", run_id)
        return {"runId": run_id, "result": "dropped"}
    if queued.get("result") != QUEUED or not await services.store.events.claim(
            f"policy-job|{run_id}", ttl_seconds=JOB_CLAIM_SECONDS):
        log.info("policy job %s was already run; this delivery does nothing", run_id)
        return {"runId": run_id, "result": "duplicate"}
    request = queued.get("request") or {}
    running = {**queued, "result": RUNNING}
    await services.store.runs.put(running)
    try:
        if message.kind == "plan":
            result = await plan(services, trigger="http", document=request.get("desired"), run=running)
        else:
            refuse_in_audit_mode(services, "apply policy plans")
            result = await apply_stored_plan(
                services, str(request.get("planId")), accept_lockout=request.get("acceptLockoutUsers") is not None,
                lockout_users=request.get("acceptLockoutUsers"),
                accept_no_emergency_exclusion=request.get("acceptNoEmergencyExclusion") is True,
                trigger="http", run=running)
    except PasskeyGuardError as exc:
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.detail is not None:
            error["detail"] = exc.detail
        await _record_error(services, run_id, error, "refused" if exc.status < 500 else "failed")
        log.warning("policy job %s ended with %s: %s", run_id, exc.code, exc.message)
        return {"runId": run_id, "result": "refused" if exc.status < 500 else "failed", "error": exc.code}
    except Exception:
        log.exception("policy job %s failed unexpectedly", run_id)
        await _record_error(services, run_id, {"code": "internalError",
                                               "message": "an unexpected error occurred; see the logs"}, "failed")
        return {"runId": run_id, "result": "failed", "error": "internalError"}
    return {"runId": run_id, "result": result.get("result", "planned")}


async def _record_error(services: Services, run_id: str, error: dict[str, Any], result: str) -> None:
    """Put the error on the job's run; a result the run already recorded (failed, verification-failed) stays."""
    run = await services.store.runs.get(run_id)
    if run.get("result") in (QUEUED, RUNNING):
        run["result"] = result
    run["error"] = error
    await services.store.runs.put(run)
