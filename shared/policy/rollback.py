"""The rollback use case: undo what one apply run changed, object by object (the pure rules are in
shared/policy/rollback_plan.py), under the same lease, permission pre-check and lockout safety as an apply."""
from __future__ import annotations

import asyncio
from typing import Any

from shared.actors import THE_APP, Actor
from shared.errors import ConflictError, InputError, LockoutRefused, VerificationFailed
from shared.graph.policy_reads import (
    read_ca_policies_raw,
    read_combination_configurations,
    read_fido2_raw,
    read_strengths_raw,
)
from shared.policy.apply import APPLY_LEASE, APPLY_LEASE_SECONDS, execute_writes
from shared.policy.lockout import attach_lockout
from shared.policy.plan_codec import plan_to_json
from shared.policy.plan_model import Plan
from shared.policy.planning import read_lockout_inputs
from shared.policy.render import render_rollback_table
from shared.policy.rollback_plan import RollbackPlan, build_rollback, rollback_to_json, state_hash_of, strengths_touched
from shared.policy.runs import RunRecorder
from shared.services import Services


def plan_rollback(run: dict[str, Any], fido2: dict[str, Any], strengths: list[dict[str, Any]],
                  ca: list[dict[str, Any]]) -> RollbackPlan:
    """What rolling back `run` would write against the tenant as read now; see shared/policy/rollback_plan.py."""
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

    Per object (shared/policy/rollback_plan.py): what is still as the run left it is put back (created objects
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
        made = plan_rollback(source, fido2, strengths, ca)
        if made.plan.needs_lockout_evaluation:
            passkeys, upns = await read_lockout_inputs(services, recorder.progress)
            made.plan = attach_lockout(made.plan, passkeys, upns)
        _check_rollback_safe(made.plan, run_id, accept_lockout=accept_lockout)
        before = {"fido2": fido2, "strengths": strengths, "conditionalAccess": ca}
        shown = rollback_to_json(made)
        table = render_rollback_table(made, run_id)
        if made.plan.empty:
            run = await recorder.finish(_rollback_result(made), rolledBack=run_id, before=before, **shown)
            return {"runId": run["id"], "result": run["result"], "rolledBack": run_id, **shown, "table": table}
        done = await execute_writes(services, made.plan, recorder.id, recorder.progress)
        fido2_after, strengths_after, ca_after = await _read_for_rollback(services, source)
        after = {"fido2": fido2_after, "strengths": strengths_after, "conditionalAccess": ca_after}
        if plan_rollback(source, fido2_after, strengths_after, ca_after).plan.writes:
            await recorder.finish("verification-failed", rolledBack=run_id, plan=plan_to_json(made.plan),
                                  writes=done, before=before, after=after, **shown)
            raise VerificationFailed("the read-back after the rollback does not match the run's before-snapshot")
        run = await recorder.finish(_rollback_result(made), rolledBack=run_id, plan=plan_to_json(made.plan),
                                    writes=done, before=before, after=after, **shown)
        return {"runId": run["id"], "result": run["result"], "rolledBack": run_id, "plan": plan_to_json(made.plan),
                **shown, "table": table}
    except Exception as exc:  # refused or failed after its progress was shown: the row says so
        await recorder.stopped(exc)
        raise
    finally:
        await services.store.checkpoints.release_lease(APPLY_LEASE, recorder.id)
