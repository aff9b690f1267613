"""The apply use case: plan now (or re-check a stored plan), refuse what needs a person, then send the plan's
writes in order through shared/graph/policy_writes.py, each fenced on the tenant's apply lease.

After writing, the state is read back and planned again: anything still different fails the run.
"""
from __future__ import annotations

from typing import Any

from shared.actors import THE_APP, Actor
from shared.errors import (
    AcceptanceMismatch,
    ConcurrencyError,
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
from shared.policy.document import DesiredState, validate_document
from shared.policy.inputs import load_desired, read_state
from shared.policy.plan import build_plan, fill_strength_id, state_hash
from shared.policy.plan_codec import plan_from_json, plan_to_json
from shared.policy.plan_model import Plan
from shared.policy.planning import make_plan, plan_view
from shared.policy.runs import RunRecorder
from shared.policy.verify import remember_allowed
from shared.progress import Progress
from shared.services import Services

APPLY_LEASE = "policy-apply"
APPLY_LEASE_SECONDS = 300


class PlanBlocked(InputError):
    """The plan has errors (fix the document or the tenant first); a 400 like any bad input."""


def lockout_user_count(made: Plan) -> int:
    """How many distinct users the plan would lock out (the number an HTTP acceptance must state)."""
    return len({r.user_id for r in made.lockout})


def check_safe(made: Plan, *, accept_lockout: bool, lockout_users: int | None = None,
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


async def hold_lease(services: Services, owner: str, before: str) -> None:
    """Renew the apply lease for another full term, or stop: the fence every write passes first.

    A renewal only succeeds while the row still names `owner`, and it gives APPLY_LEASE_SECONDS from now,
    so the one write that follows runs under a lease nobody else can take meanwhile.
    """
    if not await services.store.checkpoints.renew_lease(APPLY_LEASE, owner, APPLY_LEASE_SECONDS):
        raise LeaseLost(f"the apply lease was lost (another run holds it now); stopped before {before}, "
                        "which was not sent")


async def execute_writes(services: Services, made: Plan, lease_owner: str,
                         progress: Progress | None = None) -> list[dict[str, Any]]:
    """Send the plan's writes in order, each fenced on the apply lease, filling the new strength's id in;
    the run's progress counts them (Conditional Access writes go a second apart)."""
    await require_write_roles(services.graph, made.writes)  # every role the writes need, before the first one
    writes = [dict(w) for w in made.writes]
    done: list[dict[str, Any]] = []
    ca = policy_writes.CaPacer()
    progress = progress or Progress.untracked()
    await progress.begin("writes", unit="writes", total=len(writes))
    while writes:
        write = writes.pop(0)
        await hold_lease(services, lease_owner, f"write {len(done) + 1} of {len(done) + 1 + len(writes)} "
                                                f"({write['op']})")
        created = await policy_writes.send_write(services.graph, write, ca)
        done.append({"op": write["op"], "target": write.get("target"), **({"createdId": created} if created else {})})
        if write["op"] == "create_strength" and created:
            writes = fill_strength_id(writes, created)
        await progress.advance(len(done))
    return done


async def apply_document(services: Services, *, trigger: str, document: Any = None, accept_lockout: bool = False,
                         accept_no_emergency_exclusion: bool = False, actor: Actor = THE_APP) -> dict[str, Any]:
    """Plan and apply now (CLI `apply`, the enforce-mode timer)."""
    desired = load_desired(services, document)
    return await apply_desired(services, desired, trigger=trigger, accept_lockout=accept_lockout,
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
    return await apply_desired(services, desired, trigger=trigger, accept_lockout=accept_lockout, expected=expected,
                        stored=stored, lockout_users=lockout_users,
                        accept_no_emergency_exclusion=accept_no_emergency_exclusion, run=run, actor=actor)


async def apply_desired(services: Services, desired: DesiredState, *, trigger: str, accept_lockout: bool,
                        expected: Plan | None = None, stored: dict[str, Any] | None = None,
                        lockout_users: int | None = None, accept_no_emergency_exclusion: bool = False,
                        run: dict[str, Any] | None = None, actor: Actor = THE_APP) -> dict[str, Any]:
    """Plan and apply under the tenant's apply lease (every apply ends here, the timer's too). With `expected`
    (a stored plan) the tenant must still be in the state it was made from; the fresh plan is then the same."""
    await services.graph.confirm_tenant()  # the right tenant before any storage read or write (wrongTenant)
    tenant = services.settings.tenant_id
    recorder = RunRecorder(services, "apply", trigger, run, actor)
    if not await services.store.checkpoints.acquire_lease(APPLY_LEASE, recorder.id, APPLY_LEASE_SECONDS):
        raise ConflictError("another apply is running for this tenant; this one yielded and wrote nothing")
    try:
        made, before = await make_plan(services, desired, recorder.progress)
        if expected is not None:
            live = state_hash(desired, before.fido2, before.strengths, before.ca)
            if live != expected.state_hash:
                raise ConflictError("the tenant changed since this plan was made; make a new plan",
                                    detail={"planStateHash": expected.state_hash, "liveStateHash": live})
            # Same desired state and same starting state: the fresh plan is the stored one, with the
            # lockout impact read again now (users may have registered passkeys since).
        check_safe(made, accept_lockout=accept_lockout, lockout_users=lockout_users,
                    accept_no_emergency_exclusion=accept_no_emergency_exclusion,
                    plan_id=stored["id"] if stored is not None else None)
        if made.empty:
            run = await recorder.finish("no-op", plan=plan_to_json(made), before=before.snapshot())
            return {"runId": run["id"], "result": "no-op", "writes": [], **plan_view(made, tenant_id=tenant)}
        try:
            done = await execute_writes(services, made, recorder.id, recorder.progress)
        except PasskeyGuardError as exc:
            after = await read_state(services, desired)
            await recorder.finish("failed", plan=plan_to_json(made), before=before.snapshot(),
                                  after=after.snapshot(), error={"code": exc.code, "message": exc.message})
            raise
        await recorder.progress.begin("read-back", unit="reads")
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
        await remember_allowed(services, after.fido2, desired, None, None, only_if_superset=False)
        run = await recorder.finish("applied", plan=plan_to_json(made), writes=done, before=before.snapshot(),
                                    after=after.snapshot())
        return {"runId": run["id"], "result": "applied", "writes": done, **plan_view(made, tenant_id=tenant)}
    except Exception as exc:  # refused or failed after its progress was shown: the row says so
        await recorder.stopped(exc)
        raise
    finally:
        await services.store.checkpoints.release_lease(APPLY_LEASE, recorder.id)
