"""The plan use case: plan against the live tenant (with the lockout impact read when the plan narrows
anything), store the plan with the hash of the state it was made from, and show it to people and machines."""
from __future__ import annotations

import uuid
from typing import Any

from shared.actors import THE_APP, Actor
from shared.graph.policy_reads import list_user_upns, read_directory_names, read_users_with_passkeys
from shared.policy.document import DesiredState, desired_to_json
from shared.policy.inputs import TenantState, load_desired, read_state
from shared.policy.lockout import attach_lockout
from shared.policy.plan import build_plan, names_to_read
from shared.policy.plan_codec import plan_to_json
from shared.policy.plan_model import Plan
from shared.policy.render import plan_to_markdown, render_plan_table
from shared.policy.runs import RunRecorder, now
from shared.progress import Progress
from shared.services import Services

LOCKOUT_SLICE = 400  # users whose passkeys are read between two progress updates (20 `$batch` requests)


async def read_lockout_inputs(services: Services, progress: Progress | None = None
                              ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Every user's passkeys and UPN for the lockout evaluation, read a slice of users at a time so the run
    shows how far the evaluation got (the longest step of a plan or apply in a large tenant)."""
    progress = progress or Progress.untracked()
    upns = await list_user_upns(services.graph)
    ids = list(upns)
    await progress.begin("lockout evaluation", unit="users", total=len(ids))
    passkeys: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(ids), LOCKOUT_SLICE):
        found, _ = await read_users_with_passkeys(services.graph, ids[start:start + LOCKOUT_SLICE])
        passkeys.update(found)
        await progress.advance(min(start + LOCKOUT_SLICE, len(ids)))
    return passkeys, upns


async def make_plan(services: Services, desired: DesiredState,
                    progress: Progress | None = None) -> tuple[Plan, TenantState]:
    """Plan against the live tenant, with the lockout impact read when the plan narrows anything."""
    progress = progress or Progress.untracked()
    await progress.begin("reading the tenant", unit="reads")
    state = await read_state(services, desired)
    users, apps, groups = names_to_read(desired, state.ca)  # only for people: who the CA policy covers
    names = await read_directory_names(services.graph, users=users, applications=apps, groups=groups)
    plan = build_plan(desired, state.fido2, state.strengths, state.ca, state.groups, names)
    if plan.needs_lockout_evaluation and not plan.blocked:
        passkeys, upns = await read_lockout_inputs(services, progress)
        plan = attach_lockout(plan, passkeys, upns)
    return plan, state


def plan_view(plan: Plan, *, tenant_id: str, plan_id: str | None = None) -> dict[str, Any]:
    """A plan for people and machines: JSON, a fixed-width table and Markdown."""
    return {"planId": plan_id, "plan": plan_to_json(plan), "empty": plan.empty, "blocked": plan.blocked,
            "requiresAcceptance": plan.requires_acceptance, "table": render_plan_table(plan),
            "markdown": plan_to_markdown(plan, tenant_id=tenant_id, generated_at=now(), plan_id=plan_id)}


async def plan(services: Services, *, trigger: str, document: Any = None,
               run: dict[str, Any] | None = None, actor: Actor = THE_APP) -> dict[str, Any]:
    """Plan, store the plan with the hash of the state it was made from, and return its id and diff."""
    desired = load_desired(services, document)
    await services.graph.confirm_tenant()  # the right tenant before its progress is recorded (wrongTenant: no row)
    recorder = RunRecorder(services, "plan", trigger, run, actor)
    try:
        made, state = await make_plan(services, desired, recorder.progress)
    except Exception as exc:  # failed after its progress was shown: the row says so
        await recorder.stopped(exc)
        raise
    plan_id = uuid.uuid4().hex
    await services.store.plans.put(plan_id,
                                  {"plan": plan_to_json(made), "desired": desired_to_json(desired)}, made.state_hash)
    await recorder.finish("planned", planId=plan_id, plan=plan_to_json(made), before=state.snapshot())
    return {"runId": recorder.id, **plan_view(made, tenant_id=services.settings.tenant_id, plan_id=plan_id)}
