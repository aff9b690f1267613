"""The apply use case: what it refuses before any write (errors, lockout, emergency exclusion, a stale
acceptance), and an apply that writes, reads back and releases the tenant's lease."""
from __future__ import annotations

import pytest

from shared.errors import AcceptanceMismatch, EmergencyExclusionRefused, LockoutRefused
from shared.policy.apply import APPLY_LEASE, PlanBlocked, apply_document, check_safe, lockout_user_count
from shared.policy.plan_model import Issue, LockoutRow, Narrowing, Plan


def plan_with(**fields: object) -> Plan:
    return Plan(mode="legacy", state_hash="h", desired_hash="d", **fields)  # type: ignore[arg-type]


LOCKOUT = [LockoutRow("u1", "a@x", "k1", "aa", "Key", None), LockoutRow("u1", "a@x", "k2", "aa", "Key", None),
           LockoutRow("u2", "b@x", "k3", "aa", "Key", None)]
NARROWING = [Narrowing("aaguids_removed", "AAGUIDs removed: aa", ("aa",))]


def test_lockout_counts_users_not_passkeys():
    """The number an acceptance must state is distinct users, however many passkeys each loses."""
    assert lockout_user_count(plan_with(lockout=LOCKOUT)) == 2


def test_a_plan_with_errors_is_blocked_whatever_is_accepted():
    """Errors forbid applying: accepting the lockout does not help."""
    with pytest.raises(PlanBlocked, match="group missing"):
        check_safe(plan_with(errors=[Issue("group_not_found", "group missing")]), accept_lockout=True)


def test_a_lockout_needs_acceptance_and_names_the_plan_to_accept():
    """A plan that locks people out is refused unless accepted; the refusal says how to accept it."""
    made = plan_with(lockout=LOCKOUT, narrowing=NARROWING, lockout_evaluated=True)
    with pytest.raises(LockoutRefused) as refused:
        check_safe(made, accept_lockout=False, plan_id="p-1")
    assert "2 user(s)" in refused.value.message
    assert refused.value.detail["acceptLockout"] == {"planId": "p-1", "users": 2}
    check_safe(made, accept_lockout=True)


def test_an_acceptance_for_another_number_of_users_is_refused():
    """Accepting 1 user when the plan now locks out 2 is a mismatch: nothing is written."""
    made = plan_with(lockout=LOCKOUT, narrowing=NARROWING, lockout_evaluated=True)
    with pytest.raises(AcceptanceMismatch):
        check_safe(made, accept_lockout=True, lockout_users=1)


def test_an_unexcluded_enforced_ca_policy_needs_its_own_acceptance():
    """Accepting the lockout is not accepting a CA policy that spares no emergency-access account."""
    made = plan_with(unexcluded_ca=["Require passkey"])
    with pytest.raises(EmergencyExclusionRefused):
        check_safe(made, accept_lockout=True)
    check_safe(made, accept_lockout=False, accept_no_emergency_exclusion=True)


async def test_an_apply_writes_reads_back_and_releases_the_lease(use_case_stack):
    """The default document applies to a fresh tenant, is recorded as applied, and leaves the lease free."""
    services, sim = await use_case_stack()
    result = await apply_document(services, trigger="test")
    assert result["result"] == "applied" and result["writes"] and sim.stats()["writes"] == len(result["writes"])
    run = await services.store.runs.get(result["runId"])
    assert run["result"] == "applied" and run["kind"] == "apply"
    assert await services.store.checkpoints.acquire_lease(APPLY_LEASE, "next", 30)
