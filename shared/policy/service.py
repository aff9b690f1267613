"""Policy use cases: verify, plan, apply (fresh or stored), rollback and the scheduled run.

Reads come from `shared/graph/policy_reads.py` as raw JSON; decisions come from the pure core (`plan.py`,
`checks.py`); the plan's writes are sent in the order the plan lists them by `shared/graph/policy_writes.py`,
each with a body built fresh from the plan, fenced on the apply lease.

After writing, the state is read back and planned again: anything still different fails the run.
Every run (verify, plan, apply, rollback) is recorded in the `runs` table.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.actors import THE_APP, Actor, resolve_actor, run_fields
from shared.errors import (
    AcceptanceMismatch,
    ConcurrencyError,
    ConfigError,
    ConflictError,
    EmergencyExclusionRefused,
    InputError,
    LeaseLost,
    LockoutRefused,
    PasskeyGuardError,
    VerificationFailed,
)
from shared.graph import policy_writes
from shared.graph.permissions import require_write_roles
from shared.graph.policy_reads import (
    read_ca_policies_raw,
    read_combination_configurations,
    read_directory_names,
    read_fido2_raw,
    read_groups,
    read_strengths_raw,
    read_users_with_passkeys,
)
from shared.policy.checks import build_check_context, run_checks
from shared.policy.current import effective_allowed_aaguids, read_fido2
from shared.policy.document import DesiredState, desired_to_json, parse_document, validate_document
from shared.policy.lockout import attach_lockout
from shared.policy.plan import build_plan, fill_strength_id, names_to_read, state_hash
from shared.policy.plan_codec import plan_from_json, plan_to_json
from shared.policy.plan_model import Plan
from shared.policy.render import (
    plan_to_markdown,
    render_plan_table,
    render_rollback_table,
    report_to_json,
    report_to_markdown,
)
from shared.policy.rollback import RollbackPlan, build_rollback, rollback_to_json, state_hash_of, strengths_touched
from shared.services import Services

log = logging.getLogger(__name__)
POLICY_CHECKPOINT = "policy"
APPLY_LEASE = "policy-apply"
APPLY_LEASE_SECONDS = 300


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------------------ inputs
def load_desired(services: Services, document: Any = None) -> DesiredState:
    """The desired state: the request's document when given, else the file POLICY_FILE names."""
    if document is not None:
        return validate_document(document)
    path = Path(services.settings.policy_file)
    try:
        text = path.read_bytes()
    except OSError:
        raise ConfigError(f"setting POLICY_FILE names {path}, which cannot be read") from None
    return parse_document(text)


@dataclass
class TenantState:
    """The tenant's current policy state as raw Graph JSON."""

    fido2: dict[str, Any]
    strengths: list[dict[str, Any]]
    ca: list[dict[str, Any]]
    groups: dict[str, dict[str, Any] | None]

    def snapshot(self) -> dict[str, Any]:
        return {"fido2": self.fido2, "strengths": self.strengths, "conditionalAccess": self.ca}


async def read_state(services: Services, desired: DesiredState) -> TenantState:
    """Everything a plan or a verification looks at, read in parallel where Graph allows."""
    graph = services.graph
    fido2, strengths, groups = await asyncio.gather(
        read_fido2_raw(graph),
        read_strengths_raw(graph, with_configurations_for=desired.authentication_strength.display_name),
        read_groups(graph, desired.group_ids()))
    ca = await read_ca_policies_raw(graph) if desired.conditional_access is not None else []
    return TenantState(fido2=fido2, strengths=strengths, ca=ca, groups=groups)


# ------------------------------------------------------------------------------------------ runs
class RunRecorder:
    """Collects what a run did and writes one row to the `runs` table."""

    def __init__(self, services: Services, kind: str, trigger: str, existing: dict[str, Any] | None = None,
                 actor: Actor = THE_APP) -> None:
        """`existing`: the queued run row of an HTTP job, finished in place under its own id (it already
        names its trigger and requester). `actor`: who acted (shared/actors.py); the app's own runs
        alone carry the app's mode."""
        self.services = services
        self.actor = actor
        self.run: dict[str, Any] = {"id": uuid.uuid4().hex, "kind": kind, "trigger": trigger, "started_at": _now()}
        if existing is not None:
            self.run = {**existing, "kind": kind}
        self._t0 = time.monotonic()
        self._calls0 = services.graph.counters.requests
        from shared.telemetry import bind_run

        bind_run(self.id)

    @property
    def id(self) -> str:
        return str(self.run["id"])

    async def finish(self, result: str, **fields: Any) -> dict[str, Any]:
        if "actor" not in self.run:
            self.run.update(run_fields(self.run["trigger"], await resolve_actor(self.services.graph, self.actor),
                                       self.services.settings.enforcement_mode))
        self.run.update(fields)
        self.run["result"] = result
        self.run["graphCalls"] = self.services.graph.counters.requests - self._calls0
        self.run["durationMs"] = round((time.monotonic() - self._t0) * 1000)
        await self.services.store.runs.put(self.run)
        return self.run


def _public_run(run: dict[str, Any]) -> dict[str, Any]:
    out = {("runId" if k == "id" else k): v for k, v in run.items() if k != "started_at"}
    out["startedAt"] = run["started_at"].isoformat()
    return out


# ------------------------------------------------------------------------------------------ verify
async def verify(services: Services, *, trigger: str, document: Any = None,
                 actor: Actor = THE_APP) -> dict[str, Any]:
    """Run the compliance checks against the live tenant; JSON report with Markdown beside it."""
    recorder = RunRecorder(services, "verify", trigger, actor=actor)
    desired = load_desired(services, document)
    state = await read_state(services, desired)
    tenant = services.settings.tenant_id
    last, etag = await services.store.checkpoints.get(POLICY_CHECKPOINT)
    last_allowed = (last or {}).get("allowedAaguids")
    report = run_checks(build_check_context(desired, state.fido2, state.strengths, state.ca, last_allowed))
    now = _now()
    body = report_to_json(report, tenant_id=tenant, generated_at=now)
    body["markdown"] = report_to_markdown(report, tenant_id=tenant, generated_at=now)
    await _remember_allowed(services, state.fido2, desired, last_allowed, etag, only_if_superset=True)
    run = await recorder.finish("passed" if report.passed else "failed", report=body, after=state.snapshot())
    return {"runId": run["id"], "result": run["result"], **body}


async def _remember_allowed(services: Services, fido2: dict[str, Any], desired: DesiredState,
                            last: list[str] | None, etag: str | None, *, only_if_superset: bool) -> None:
    """Keep the allow-list seen at this run for check PG-FIDO2-007 (the next run compares with it).

    A verification only moves it forward when nothing vanished, so a silent removal keeps failing the
    check until it is put back or removed on purpose through a plan.
    """
    try:
        allowed = effective_allowed_aaguids(read_fido2(fido2, desired.passkey_method.passkey_profile))
    except InputError:
        return
    if allowed is None or (only_if_superset and last is not None and not set(last) <= set(allowed)):
        return
    if last is not None and sorted(last) == sorted(allowed):
        return
    from shared.state import ABSENT

    try:
        await services.store.checkpoints.put(POLICY_CHECKPOINT,
                                             {"allowedAaguids": allowed, "at": _now().isoformat()},
                                             None if not only_if_superset else (etag or ABSENT))
    except ConcurrencyError:
        log.info("the policy checkpoint moved meanwhile; keeping the other run's value")


# ------------------------------------------------------------------------------------------ plan
async def make_plan(services: Services, desired: DesiredState) -> tuple[Plan, TenantState]:
    """Plan against the live tenant, with the lockout impact read when the plan narrows anything."""
    state = await read_state(services, desired)
    users, apps, groups = names_to_read(desired, state.ca)  # only for people: who the CA policy covers
    names = await read_directory_names(services.graph, users=users, applications=apps, groups=groups)
    plan = build_plan(desired, state.fido2, state.strengths, state.ca, state.groups, names)
    if plan.needs_lockout_evaluation and not plan.blocked:
        passkeys, upns = await read_users_with_passkeys(services.graph)
        plan = attach_lockout(plan, passkeys, upns)
    return plan, state


def plan_view(plan: Plan, *, tenant_id: str, plan_id: str | None = None) -> dict[str, Any]:
    """A plan for people and machines: JSON, a fixed-width table and Markdown."""
    return {"planId": plan_id, "plan": plan_to_json(plan), "empty": plan.empty, "blocked": plan.blocked,
            "requiresAcceptance": plan.requires_acceptance, "table": render_plan_table(plan),
            "markdown": plan_to_markdown(plan, tenant_id=tenant_id, generated_at=_now(), plan_id=plan_id)}


async def plan(services: Services, *, trigger: str, document: Any = None,
               run: dict[str, Any] | None = None, actor: Actor = THE_APP) -> dict[str, Any]:
    """Plan, store the plan with the hash of the state it was made from, and return its id and diff."""
    recorder = RunRecorder(services, "plan", trigger, run, actor)
    desired = load_desired(services, document)
    made, state = await make_plan(services, desired)
    plan_id = uuid.uuid4().hex
    await services.store.plans.put(plan_id,
                                   {"plan": plan_to_json(made), "desired": desired_to_json(desired)}, made.state_hash)
    await recorder.finish("planned", planId=plan_id, plan=plan_to_json(made), before=state.snapshot())
    return {"runId": recorder.id, **plan_view(made, tenant_id=services.settings.tenant_id, plan_id=plan_id)}


# ------------------------------------------------------------------------------------------ apply
class PlanBlocked(InputError):
    """The plan has errors (fix the document or the tenant first); a 400 like any bad input."""


def lockout_user_count(made: Plan) -> int:
    """How many distinct users the plan would lock out (the number an HTTP acceptance must state)."""
    return len({r.user_id for r in made.lockout})


def _check_safe(made: Plan, *, accept_lockout: bool, lockout_users: int | None = None,
                accept_no_emergency_exclusion: bool = False, plan_id: str | None = None) -> None:
    """Refuse a plan with errors, a lockout not accepted (or accepted for another number of users, when
    `lockout_users` is given), or an unexcluded enforced CA policy not accepted."""
    if made.blocked:
        raise PlanBlocked("the plan has errors; nothing was written: "
                         + "; ".join(e.message for e in made.errors),
                         detail=[{"code": e.code, "message": e.message} for e in made.errors])
    if made.requires_acceptance and not accept_lockout:
        rows = [{"userId": r.user_id, "userPrincipalName": r.upn, "passkeyId": r.passkey_id, "aaGuid": r.aaguid,
                 "name": r.name, "scope": r.scope} for r in made.lockout]
        users = sorted({r.user_id for r in made.lockout})
        reasons = "; ".join(n.detail for n in made.narrowing) or "the plan narrows what is allowed"
        raise LockoutRefused(
            f"the plan would lock out {len(users)} user(s) ({reasons}); nothing was written. Apply again with "
            "--accept-lockout (CLI) or acceptLockout: {\"planId\": <this plan>, \"users\": "
            f"{len(users)}}} (HTTP) to accept this",
            detail={"lockout": rows, "narrowing": [{"kind": n.kind, "detail": n.detail} for n in made.narrowing],
                    **({"acceptLockout": {"planId": plan_id, "users": len(users)}} if plan_id else {})})
    if made.requires_acceptance and lockout_users is not None and lockout_users != lockout_user_count(made):
        raise AcceptanceMismatch(
            f"the acceptance is for {lockout_users} user(s), but the plan now locks out "
            f"{lockout_user_count(made)} user(s); nothing was written. Review the lockout and accept again",
            detail={"accepted": lockout_users, "users": lockout_user_count(made)})
    if made.requires_emergency_acceptance and not accept_no_emergency_exclusion:
        raise EmergencyExclusionRefused(
            f"the plan enforces Conditional Access polic(ies) {', '.join(made.unexcluded_ca)} without excluding "
            "an emergency-access account or group; nothing was written. Add an exclusion, or apply again with "
            "--accept-no-emergency-exclusion (CLI) or acceptNoEmergencyExclusion: {\"planId\": <this plan>} (HTTP)",
            detail={"policies": list(made.unexcluded_ca)})


async def _hold_lease(services: Services, owner: str, before: str) -> None:
    """Renew the apply lease for another full term, or stop: the fence every write passes first.

    A renewal only succeeds while the row still names `owner`, and it gives APPLY_LEASE_SECONDS from now,
    so the one write that follows runs under a lease nobody else can take meanwhile.
    """
    if not await services.store.checkpoints.renew_lease(APPLY_LEASE, owner, APPLY_LEASE_SECONDS):
        raise LeaseLost(f"the apply lease was lost (another run holds it now); stopped before {before}, "
                        "which was not sent")


async def _execute(services: Services, made: Plan, lease_owner: str) -> list[dict[str, Any]]:
    """Send the plan's writes in order, each fenced on the apply lease, filling the new strength's id in."""
    await require_write_roles(services.graph, made.writes)  # every role the writes need, before the first one
    writes = [dict(w) for w in made.writes]
    done: list[dict[str, Any]] = []
    ca = policy_writes.CaPacer()
    while writes:
        write = writes.pop(0)
        await _hold_lease(services, lease_owner, f"write {len(done) + 1} of {len(done) + 1 + len(writes)} "
                                                 f"({write['op']})")
        created = await policy_writes.send_write(services.graph, write, ca)
        done.append({"op": write["op"], "target": write.get("target"), **({"createdId": created} if created else {})})
        if write["op"] == "create_strength" and created:
            writes = fill_strength_id(writes, created)
    return done


async def apply_document(services: Services, *, trigger: str, document: Any = None, accept_lockout: bool = False,
                         accept_no_emergency_exclusion: bool = False, actor: Actor = THE_APP) -> dict[str, Any]:
    """Plan and apply now (CLI `apply`, the enforce-mode timer)."""
    desired = load_desired(services, document)
    return await _apply(services, desired, trigger=trigger, accept_lockout=accept_lockout,
                        accept_no_emergency_exclusion=accept_no_emergency_exclusion, actor=actor)


async def apply_stored_plan(services: Services, plan_id: str, *, accept_lockout: bool, trigger: str,
                            lockout_users: int | None = None, accept_no_emergency_exclusion: bool = False,
                            run: dict[str, Any] | None = None, actor: Actor = THE_APP) -> dict[str, Any]:
    """Apply a stored plan only while the tenant still matches the state the plan was made from.

    `lockout_users` (HTTP): the exact number of users accepted; the lockout read again now must match it.
    """
    stored = await services.store.plans.get(plan_id)
    if stored.get("applied"):
        raise ConflictError(f"plan {plan_id} was already applied")
    desired = validate_document(stored["plan"]["desired"])
    expected = plan_from_json(stored["plan"]["plan"])
    return await _apply(services, desired, trigger=trigger, accept_lockout=accept_lockout, expected=expected,
                        stored=stored, lockout_users=lockout_users,
                        accept_no_emergency_exclusion=accept_no_emergency_exclusion, run=run, actor=actor)


async def _apply(services: Services, desired: DesiredState, *, trigger: str, accept_lockout: bool,
                 expected: Plan | None = None, stored: dict[str, Any] | None = None,
                 lockout_users: int | None = None, accept_no_emergency_exclusion: bool = False,
                 run: dict[str, Any] | None = None, actor: Actor = THE_APP) -> dict[str, Any]:
    await services.graph.confirm_tenant()  # the right tenant before any storage read or write (wrongTenant)
    tenant = services.settings.tenant_id
    recorder = RunRecorder(services, "apply", trigger, run, actor)
    if not await services.store.checkpoints.acquire_lease(APPLY_LEASE, recorder.id, APPLY_LEASE_SECONDS):
        raise ConflictError("another apply is running for this tenant; this one yielded and wrote nothing")
    try:
        made, before = await make_plan(services, desired)
        if expected is not None:
            live = state_hash(desired, before.fido2, before.strengths, before.ca)
            if live != expected.state_hash:
                raise ConflictError("the tenant changed since this plan was made; make a new plan",
                                    detail={"planStateHash": expected.state_hash, "liveStateHash": live})
            # Same desired state and same starting state: the fresh plan is the stored one, with the
            # lockout impact read again now (users may have registered passkeys since).
        _check_safe(made, accept_lockout=accept_lockout, lockout_users=lockout_users,
                    accept_no_emergency_exclusion=accept_no_emergency_exclusion,
                    plan_id=stored["id"] if stored is not None else None)
        if made.empty:
            run = await recorder.finish("no-op", plan=plan_to_json(made), before=before.snapshot())
            return {"runId": run["id"], "result": "no-op", "writes": [], **plan_view(made, tenant_id=tenant)}
        try:
            done = await _execute(services, made, recorder.id)
        except PasskeyGuardError as exc:
            after = await read_state(services, desired)
            await recorder.finish("failed", plan=plan_to_json(made), before=before.snapshot(),
                                  after=after.snapshot(), error={"code": exc.code, "message": exc.message})
            raise
        after = await read_state(services, desired)
        remaining = build_plan(desired, after.fido2, after.strengths, after.ca, after.groups)
        if not remaining.empty:
            await recorder.finish("verification-failed", plan=plan_to_json(made), writes=done,
                                  before=before.snapshot(), after=after.snapshot(),
                                  remaining=plan_to_json(remaining))
            raise VerificationFailed("the read-back after applying does not match the desired state",
                                     detail=[{"area": c.area, "field": c.field, "now": c.before, "wanted": c.after}
                                             for c in remaining.changes])
        if stored is not None:
            try:
                await services.store.plans.mark_applied(stored["id"], stored["etag"], run_id=recorder.id)
            except ConcurrencyError:
                raise ConflictError(f"plan {stored['id']} was applied by another request") from None
        await _remember_allowed(services, after.fido2, desired, None, None, only_if_superset=False)
        run = await recorder.finish("applied", plan=plan_to_json(made), writes=done, before=before.snapshot(),
                                    after=after.snapshot())
        return {"runId": run["id"], "result": "applied", "writes": done, **plan_view(made, tenant_id=tenant)}
    finally:
        await services.store.checkpoints.release_lease(APPLY_LEASE, recorder.id)


# ------------------------------------------------------------------------------------------ rollback
def rollback_plan(run: dict[str, Any], fido2: dict[str, Any], strengths: list[dict[str, Any]],
                  ca: list[dict[str, Any]]) -> RollbackPlan:
    """What rolling back `run` would write against the tenant as read now; see shared/policy/rollback.py."""
    made = build_rollback(run, fido2, strengths, ca)
    made.plan.state_hash = state_hash_of(fido2, strengths, ca)
    return made


async def _read_for_rollback(services: Services, run: dict[str, Any]
                             ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The FIDO2 configuration, every strength (the run's with their combination configurations, read from
    their own collection as the run's snapshots were) and every CA policy (to see who references a strength)."""
    graph = services.graph
    fido2, strengths, ca = await asyncio.gather(read_fido2_raw(graph), read_strengths_raw(graph),
                                                read_ca_policies_raw(graph))
    names, ids = strengths_touched(run)
    ours = ids | {str(s.get("id", "")).lower() for part in ("before", "after")
                  for s in ((run.get(part) or {}).get("strengths") or [])
                  if isinstance(s, dict) and str(s.get("displayName", "")).casefold() in names}
    await read_combination_configurations(graph, [s for s in strengths if str(s.get("id", "")).lower() in ours])
    return fido2, strengths, ca


def _check_rollback_safe(made: Plan, run_id: str, *, accept_lockout: bool) -> None:
    """Refuse a rollback that may lock people out unless accepted, naming the rollback's own command."""
    if not made.requires_acceptance or accept_lockout:
        return
    rows = [{"userId": r.user_id, "userPrincipalName": r.upn, "passkeyId": r.passkey_id, "aaGuid": r.aaguid,
             "name": r.name, "scope": r.scope} for r in made.lockout]
    users = sorted({r.user_id for r in made.lockout})
    reasons = "; ".join(n.detail for n in made.narrowing)
    raise LockoutRefused(
        (f"the rollback would lock out {len(users)} user(s)" if users else "the rollback may lock people out")
        + f" ({reasons}); nothing was written. Run "
        f"`python -m shared rollback {run_id} --accept-lockout` to accept this",
        detail={"lockout": rows, "narrowing": [{"kind": n.kind, "detail": n.detail} for n in made.narrowing]})


def _rollback_result(made: RollbackPlan) -> str:
    if made.plan.writes:
        return "partly-rolled-back" if made.kept else "rolled-back"
    return "not-rolled-back" if made.kept else "no-op"


async def rollback(services: Services, run_id: str, *, accept_lockout: bool, trigger: str,
                   actor: Actor = THE_APP) -> dict[str, Any]:
    """Undo what an apply run changed: the FIDO2 configuration, the strength, the CA policy.

    Per object (shared/policy/rollback.py): what is still as the run left it is put back (created objects
    deleted), what is already as before is left alone (a second rollback writes nothing), what someone
    changed since is kept and named. Same lease, permission pre-check and lockout safety as an apply.
    """
    await services.graph.confirm_tenant()  # the right tenant before any storage read or write (wrongTenant)
    source = await services.store.runs.get(run_id)
    if source.get("kind") != "apply":
        raise InputError(f"run {run_id} is a {source.get('kind')} run, which the rollback does not undo; "
                         "name the apply run that made the change (python -m shared runs)")
    recorder = RunRecorder(services, "rollback", trigger, actor=actor)
    if not await services.store.checkpoints.acquire_lease(APPLY_LEASE, recorder.id, APPLY_LEASE_SECONDS):
        raise ConflictError("another apply is running for this tenant; the rollback yielded and wrote nothing")
    try:
        fido2, strengths, ca = await _read_for_rollback(services, source)
        made = rollback_plan(source, fido2, strengths, ca)
        if made.plan.needs_lockout_evaluation:
            passkeys, upns = await read_users_with_passkeys(services.graph)
            made.plan = attach_lockout(made.plan, passkeys, upns)
        _check_rollback_safe(made.plan, run_id, accept_lockout=accept_lockout)
        before = {"fido2": fido2, "strengths": strengths, "conditionalAccess": ca}
        shown = rollback_to_json(made)
        table = render_rollback_table(made, run_id)
        if made.plan.empty:
            run = await recorder.finish(_rollback_result(made), rolledBack=run_id, before=before, **shown)
            return {"runId": run["id"], "result": run["result"], "rolledBack": run_id, **shown, "table": table}
        done = await _execute(services, made.plan, recorder.id)
        fido2_after, strengths_after, ca_after = await _read_for_rollback(services, source)
        after = {"fido2": fido2_after, "strengths": strengths_after, "conditionalAccess": ca_after}
        if rollback_plan(source, fido2_after, strengths_after, ca_after).plan.writes:
            await recorder.finish("verification-failed", rolledBack=run_id, plan=plan_to_json(made.plan),
                                  writes=done, before=before, after=after, **shown)
            raise VerificationFailed("the read-back after the rollback does not match the run's before-snapshot")
        run = await recorder.finish(_rollback_result(made), rolledBack=run_id, plan=plan_to_json(made.plan),
                                    writes=done, before=before, after=after, **shown)
        return {"runId": run["id"], "result": run["result"], "rolledBack": run_id, "plan": plan_to_json(made.plan),
                **shown, "table": table}
    finally:
        await services.store.checkpoints.release_lease(APPLY_LEASE, recorder.id)


# ------------------------------------------------------------------------------------------ timer
async def scheduled_run(services: Services, *, past_due: bool = False) -> dict[str, Any]:
    """The timer: verify in audit mode; in enforce mode, apply when that is safe, else verify and say why."""
    trigger = "timer-late" if past_due else "timer"
    if services.settings.enforcement_mode != "enforce":
        return await verify(services, trigger=trigger)
    desired = load_desired(services)
    try:  # one plan, made under the apply lease; a plan that needs a person is refused before any write
        return await _apply(services, desired, trigger=trigger, accept_lockout=False)
    except (LockoutRefused, PlanBlocked) as exc:
        reasons = [str(e["message"]) for e in exc.detail] if isinstance(exc.detail, list) else [exc.message]
        log.warning("enforce mode did not apply: the plan needs a person (%s)", "; ".join(reasons))
        report = await verify(services, trigger=trigger)
        return {**report, "applied": False, "refused": reasons}


async def list_runs(services: Services, *, limit: int = 20, page_token: str | None = None) -> dict[str, Any]:
    runs, token = await services.store.runs.page(limit=limit, page_token=page_token)
    return {"value": [_public_run(r) for r in runs], "nextPageToken": token}
