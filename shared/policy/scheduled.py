"""The scheduled run (the timer): verify in audit mode; in enforce mode, apply when that is safe, else verify
and say why."""
from __future__ import annotations

import logging
from typing import Any

from shared.errors import LockoutRefused
from shared.policy.apply import PlanBlocked, apply_desired
from shared.policy.inputs import load_desired
from shared.policy.verify import verify
from shared.services import Services

log = logging.getLogger(__name__)


async def scheduled_run(services: Services, *, past_due: bool = False) -> dict[str, Any]:
    """The timer: verify in audit mode; in enforce mode, apply when that is safe, else verify and say why."""
    trigger = "timer-late" if past_due else "timer"
    if services.settings.enforcement_mode != "enforce":
        return await verify(services, trigger=trigger)
    desired = load_desired(services)
    try:  # one plan, made under the apply lease; a plan that needs a person is refused before any write
        return await apply_desired(services, desired, trigger=trigger, accept_lockout=False)
    except (LockoutRefused, PlanBlocked) as exc:
        reasons = [str(e["message"]) for e in exc.detail] if isinstance(exc.detail, list) else [exc.message]
        log.warning("enforce mode did not apply: the plan needs a person (%s)", "; ".join(reasons))
        report = await verify(services, trigger=trigger)
        return {**report, "applied": False, "refused": reasons}
