"""Policy as code. The pure core (no I/O): the desired-state document (`document`), the current-state views
(`current`), the plan (`plan_model`, `plan_method`, `plan`, `lockout`, `plan_codec`), the rollback plan
(`rollback_plan`), compliance checks (`checks`) and everything people read (`render`). Callers read Graph and
storage, hand plain JSON in, and send the plan's `writes` out (see `shared.policy.plan_model` for their format).

The use cases, one per module, do the I/O through `shared.graph` and `shared.state`: `verify`, `planning`,
`apply`, `rollback`, `scheduled` (the timer), `runs` (recording and listing runs) and `jobs` (HTTP plan and
apply as queued jobs); `inputs` reads what they all start from.
"""
from __future__ import annotations

from shared.policy.aaguids import AUTHENTICATOR_AAGUIDS, label_of, name_of
from shared.policy.checks import (
    CHECKS,
    CHECKS_BY_ID,
    Check,
    CheckContext,
    CheckResult,
    Report,
    build_check_context,
    run_checks,
)
from shared.policy.current import (
    CaPolicyView,
    Fido2View,
    StrengthView,
    ca_policies_named,
    effective_allowed_aaguids,
    read_fido2,
    strengths_named,
)
from shared.policy.document import (
    DesiredState,
    desired_hash,
    desired_to_json,
    parse_document,
    validate_document,
)
from shared.policy.lockout import attach_lockout, lockout_impact
from shared.policy.plan import apply_patch_locally, build_plan, fill_strength_id, state_hash
from shared.policy.plan_codec import plan_from_json, plan_to_json
from shared.policy.plan_model import STRENGTH_ID_PLACEHOLDER, ChangeRow, Issue, LockoutRow, Narrowing, Plan
from shared.policy.render import plan_to_markdown, render_plan_table, report_to_json, report_to_markdown

__all__ = [
    "AUTHENTICATOR_AAGUIDS", "CHECKS", "CHECKS_BY_ID", "STRENGTH_ID_PLACEHOLDER", "CaPolicyView", "ChangeRow",
    "Check", "CheckContext", "CheckResult", "DesiredState", "Fido2View", "Issue", "LockoutRow", "Narrowing",
    "Plan", "Report", "StrengthView", "apply_patch_locally", "attach_lockout", "build_check_context",
    "build_plan", "ca_policies_named", "desired_hash", "desired_to_json", "effective_allowed_aaguids",
    "fill_strength_id", "label_of", "lockout_impact", "name_of", "parse_document", "plan_from_json",
    "plan_to_json", "plan_to_markdown", "read_fido2", "render_plan_table", "report_to_json", "report_to_markdown",
    "run_checks", "state_hash", "strengths_named", "validate_document",
]
