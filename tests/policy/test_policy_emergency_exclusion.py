"""An enforced Conditional Access policy without an emergency-access exclusion needs its own acceptance."""
from __future__ import annotations

from shared.policy.plan import build_plan
from shared.policy.plan_codec import plan_from_json, plan_to_json
from shared.policy.render import render_plan_table
from tests.policy.policy_factories import (
    ANDROID,
    IOS,
    ca_policy,
    ca_section,
    desired,
    legacy_fido2,
    security_group,
    strength,
)

OURS = [strength(aaguids=[ANDROID, IOS])]


def plan_for(state, cas):  # type: ignore[no-untyped-def]
    """build_plan against a legacy tenant with our strength and these CA policies."""
    return build_plan(state, legacy_fido2(), OURS, cas, {g: security_group(g) for g in state.group_ids()})


def test_creating_an_enforced_policy_that_excludes_nobody_needs_emergency_acceptance():
    """Creating an `enabled` CA policy with no excluded users or groups names it in the plan."""
    plan = plan_for(desired(conditionalAccess=ca_section(state="enabled", excludeUsers=[])), [])
    assert plan.unexcluded_ca == ["Require Authenticator passkey"]
    assert plan.requires_emergency_acceptance
    again = plan_from_json(plan_to_json(plan))
    assert again.unexcluded_ca == plan.unexcluded_ca and again.requires_emergency_acceptance
    assert "emergency-access" in render_plan_table(plan)


def test_switching_an_unexcluded_policy_to_enabled_needs_emergency_acceptance():
    """Switching an existing CA policy to `enabled` while it excludes nobody needs the acceptance too."""
    state = desired(conditionalAccess=ca_section(state="enabled", excludeUsers=[]))
    plan = plan_for(state, [ca_policy(exclude_users=[])])
    assert [w["op"] for w in plan.writes] == ["update_ca_policy"]
    assert plan.requires_emergency_acceptance


def test_an_exclusion_or_report_only_or_no_ca_write_needs_no_emergency_acceptance():
    """An excluded group, a report-only state, or a plan that does not write the CA policy: no acceptance."""
    excluded = desired(conditionalAccess=ca_section(state="enabled", excludeUsers=[],
                                                    excludeGroups=["44444444-4444-4444-4444-444444444444"]))
    assert not plan_for(excluded, []).requires_emergency_acceptance
    report_only = desired(conditionalAccess=ca_section(excludeUsers=[]))
    assert not plan_for(report_only, []).requires_emergency_acceptance
    untouched = desired(conditionalAccess=ca_section(state="enabled", excludeUsers=[]))
    assert not plan_for(untouched, [ca_policy(state="enabled", exclude_users=[])]).unexcluded_ca
