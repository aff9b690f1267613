"""The /users subscription when Graph challenges it unprompted: reauthorizationRequired arrives an hour before
expiry without anyone asking the simulator for it, the served app answers it, and change notifications keep
flowing past the point where an unanswered challenge would pause them."""
from __future__ import annotations

from datetime import datetime

from shared.upn.sweep import sweep
from tests.e2e.stack import eventually, running_stack, tenant, uid, user
from tests.upn.stack_steps import rename, subscribe


async def test_an_unprompted_challenge_is_answered_and_notifications_keep_flowing(azurite):
    """The simulator's clock moves to 59 minutes before the subscription expires: the app gets
    reauthorizationRequired at its lifecycle URL and reauthorizes; 15 minutes later (the pause threshold) a
    rename still arrives as a notification and becomes a flag; no notification was lost to a pause."""
    async with running_stack(azurite, tenant([user(1), user(2)])) as stack:
        await sweep(stack.services)
        created = await subscribe(stack)
        clock = stack.sim.clock(frozen=True)
        try:
            expiry = datetime.fromisoformat(created["expirationDateTime"])
            now = datetime.fromisoformat(clock["utc"].replace("Z", "+00:00"))
            stack.sim.clock(advance=(expiry - now).total_seconds() - 59 * 60)
            assert stack.sim.stats()["notifications"]["reauth_challenges"] == 1

            async def reauthorized() -> bool:
                routes = stack.sim.stats()["calls"]["by_route"]
                return any("reauthorize" in route for route in routes)

            await eventually(reauthorized)
            stack.sim.clock(advance=15 * 60)
            await rename(stack, 2, "user2@fabrikam.example")
            flag = await eventually(lambda: stack.settled_flag(uid(2)))
            assert flag["source"] == "notification"
            assert stack.sim.stats()["notifications"].get("paused_lost", 0) == 0
        finally:
            stack.sim.clock(frozen=False)
