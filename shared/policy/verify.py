"""The verify use case: run the compliance checks (shared/policy/checks.py) against the live tenant and
record the report; it also keeps the allow-list seen, which check PG-FIDO2-007 compares with next time."""
from __future__ import annotations

import logging
from typing import Any

from shared.actors import THE_APP, Actor
from shared.errors import ConcurrencyError, InputError
from shared.policy.checks import build_check_context, run_checks
from shared.policy.current import effective_allowed_aaguids, read_fido2
from shared.policy.document import DesiredState
from shared.policy.inputs import load_desired, read_state
from shared.policy.render import report_to_json, report_to_markdown
from shared.policy.runs import RunRecorder, now
from shared.services import Services

log = logging.getLogger(__name__)
POLICY_CHECKPOINT = "policy"


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
    generated_at = now()
    body = report_to_json(report, tenant_id=tenant, generated_at=generated_at)
    body["markdown"] = report_to_markdown(report, tenant_id=tenant, generated_at=generated_at)
    await remember_allowed(services, state.fido2, desired, last_allowed, etag, only_if_superset=True)
    run = await recorder.finish("passed" if report.passed else "failed", report=body, after=state.snapshot())
    return {"runId": run["id"], "result": run["result"], **body}


async def remember_allowed(services: Services, fido2: dict[str, Any], desired: DesiredState,
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
                                            {"allowedAaguids": allowed, "at": now().isoformat()},
                                            None if not only_if_superset else (etag or ABSENT))
    except ConcurrencyError:
        log.info("the policy checkpoint moved meanwhile; keeping the other run's value")
