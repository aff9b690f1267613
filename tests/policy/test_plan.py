"""The plan's strength and Conditional Access half, its emergency-access rule, and the state hash:
strength and CA writes, the placeholder for a new strength, narrowing and acceptance."""
from __future__ import annotations

import copy

from shared.policy.plan import build_plan, fill_strength_id, state_hash
from shared.policy.plan_codec import plan_from_json, plan_to_json
from shared.policy.plan_model import STRENGTH_ID_PLACEHOLDER
from shared.policy.render import render_plan_table
from tests.policy.policy_factories import (
    ANDROID,
    APP,
    BREAK_GLASS,
    IOS,
    OTHER_STRENGTHS,
    OURS,
    YUBIKEY,
    ca_policy,
    ca_section,
    codes,
    desired,
    legacy_fido2,
    plan_for,
    profile,
    profiles_fido2,
    security_group,
    strength,
)


# --- strength ------------------------------------------------------------------------------------------
def test_missing_strength_is_created_with_placeholder() -> None:
    """A missing strength: create it (fido2 only), then its combination configuration via the placeholder."""
    plan = plan_for(strengths=OTHER_STRENGTHS)
    create, config = plan.writes
    assert create == {"op": "create_strength", "target": "Authenticator passkey",
                      "body": {"displayName": "Authenticator passkey", "description": "Managed",
                               "allowedCombinations": ["fido2"]}}
    assert config["op"] == "create_combination_configuration"
    assert config["strengthId"] == STRENGTH_ID_PLACEHOLDER
    assert config["body"] == {"@odata.type": "#microsoft.graph.fido2CombinationConfiguration",
                              "appliesToCombinations": ["fido2"], "allowedAAGUIDs": [ANDROID, IOS]}
    filled = fill_strength_id([config], "abc")
    assert filled[0]["strengthId"] == "abc"
    assert config["strengthId"] == STRENGTH_ID_PLACEHOLDER  # the plan itself is untouched


def test_strength_aaguid_change_updates_the_configuration() -> None:
    """Different AAGUIDs: update the existing configuration by id; dropping some narrows the strength."""
    plan = plan_for(strengths=[*OTHER_STRENGTHS, strength(aaguids=[ANDROID, YUBIKEY], config_id="cfg-9")])
    (write,) = plan.writes
    assert write["op"] == "update_combination_configuration"
    assert (write["strengthId"], write["configurationId"]) == ("s-ours", "cfg-9")
    assert write["body"] == {"@odata.type": "#microsoft.graph.fido2CombinationConfiguration",
                             "allowedAAGUIDs": [ANDROID, IOS]}
    assert [(n.kind, n.aaguids) for n in plan.narrowing] == [("strength_aaguids_removed", (YUBIKEY,))]


def test_strength_aaguid_order_is_not_a_change() -> None:
    """The same strength AAGUIDs in another order and case are not a change."""
    assert plan_for(strengths=[strength(aaguids=[IOS.upper(), ANDROID])]).empty


def test_multi_method_strength_is_narrowed_to_fido2() -> None:
    """A strength of ours with "password,sms" is moved to fido2 only; that narrowing cannot be evaluated."""
    plan = plan_for(strengths=[strength(combos=["password,sms", "fido2"], aaguids=[ANDROID, IOS])])
    (write,) = plan.writes
    assert write == {"op": "update_strength_combinations", "target": "Authenticator passkey", "strengthId": "s-ours",
                     "body": {"allowedCombinations": ["fido2"]}}
    (narrow,) = plan.narrowing
    assert narrow.kind == "strength_methods_narrowed" and not narrow.evaluable and "password,sms" in narrow.detail


def test_strength_without_configuration_gets_one() -> None:
    """An existing strength without FIDO2 restriction gets a configuration; it starts restricting keys."""
    plan = plan_for(strengths=[strength()])
    (write,) = plan.writes
    assert write["op"] == "create_combination_configuration"
    assert write["strengthId"] == "s-ours"
    assert [n.kind for n in plan.narrowing] == ["strength_restricted"]


def test_strength_description_update() -> None:
    """A different description is a PATCH of the description only."""
    plan = plan_for(strengths=[strength(aaguids=[ANDROID, IOS], description="old")])
    assert plan.writes == [{"op": "update_strength", "target": "Authenticator passkey", "strengthId": "s-ours",
                            "body": {"description": "Managed"}}]


def test_builtin_or_ambiguous_strength_is_an_error() -> None:
    """A built-in strength with our name, or two strengths with it, block the plan."""
    builtin = plan_for(strengths=[strength(policy_type="builtIn")])
    assert codes(builtin.errors) == ["strength_builtin"] and not builtin.writes
    twice = plan_for(strengths=[strength("a"), strength("b")])
    assert codes(twice.errors) == ["strength_ambiguous"]


def test_strength_accepting_keys_the_method_blocks_warns() -> None:
    """A strength AAGUID the method does not allow is warned about."""
    state = desired(authenticationStrength={"displayName": "Authenticator passkey", "description": "Managed",
                                            "allowedAaguids": [ANDROID, IOS, YUBIKEY]})
    plan = plan_for(state, strengths=[strength(aaguids=[ANDROID, IOS, YUBIKEY])])
    assert "strength_aaguid_not_allowed" in codes(plan.warnings)


# --- Conditional Access -------------------------------------------------------------------------------
def test_ca_created_with_strength_reference() -> None:
    """A missing CA policy is created report-only with the strength as grant control."""
    plan = plan_for(desired(conditionalAccess=ca_section()))
    (write,) = plan.writes
    assert write["op"] == "create_ca_policy" and "policyId" not in write
    assert write["body"] == {
        "displayName": "Require Authenticator passkey", "state": "enabledForReportingButNotEnforced",
        "conditions": {"clientAppTypes": ["all"], "applications": {"includeApplications": [APP]},
                       "users": {"includeUsers": ["All"], "includeGroups": [], "excludeUsers": [BREAK_GLASS],
                                 "excludeGroups": []}},
        "grantControls": {"operator": "OR", "authenticationStrength": {"id": "s-ours"}}}
    assert not plan.narrowing


def test_ca_with_new_strength_uses_placeholder_and_runs_last() -> None:
    """When the strength is new the CA body references the placeholder, and writes run in dependency order."""
    plan = plan_for(desired(conditionalAccess=ca_section()), fido2=legacy_fido2(attestation=True), strengths=[])
    assert [w["op"] for w in plan.writes] == ["patch_fido2", "create_strength", "create_combination_configuration",
                                              "create_ca_policy"]
    assert plan.writes[-1]["body"]["grantControls"]["authenticationStrength"]["id"] == STRENGTH_ID_PLACEHOLDER


def test_ca_enforced_is_narrowing() -> None:
    """Creating or switching the CA policy to enabled needs acceptance."""
    plan = plan_for(desired(conditionalAccess=ca_section(state="enabled")), cas=[ca_policy()])
    (write,) = plan.writes
    assert write["op"] == "update_ca_policy" and write["policyId"] == "ca-1"
    assert write["body"] == {"state": "enabled"}
    (narrow,) = plan.narrowing
    assert narrow.kind == "ca_enforced" and not narrow.evaluable and plan.requires_acceptance


def test_ca_grant_is_repointed_and_builtin_controls_cleared() -> None:
    """A CA policy requiring something else is pointed at our strength, clearing built-in controls."""
    plan = plan_for(desired(conditionalAccess=ca_section()), cas=[ca_policy(strength_id="other", built_in=["mfa"])])
    (write,) = plan.writes
    assert write["body"] == {"grantControls": {"operator": "OR", "authenticationStrength": {"id": "s-ours"},
                                               "builtInControls": []}}


def test_ca_condition_update_keeps_unmanaged_conditions() -> None:
    """Changing users sends the whole conditions object with fields we do not manage as read."""
    raw = ca_policy(exclude_users=[])
    raw["conditions"]["users"]["includeRoles"] = ["role-1"]
    raw["conditions"]["locations"] = {"includeLocations": ["All"]}
    plan = plan_for(desired(conditionalAccess=ca_section()), cas=[raw])
    (write,) = plan.writes
    conditions = write["body"]["conditions"]
    assert conditions["users"]["excludeUsers"] == [BREAK_GLASS]
    assert conditions["users"]["includeRoles"] == ["role-1"]
    assert conditions["locations"] == {"includeLocations": ["All"]}
    assert conditions["clientAppTypes"] == ["all"]


def test_ca_without_emergency_exclusion_warns() -> None:
    """A CA section that excludes nobody is warned about."""
    plan = plan_for(desired(conditionalAccess=ca_section(excludeUsers=[])))
    assert "no_emergency_access" in codes(plan.warnings)


def test_ca_not_managed_when_section_missing() -> None:
    """Without a conditionalAccess section no CA write is planned, whatever the tenant has."""
    plan = plan_for(cas=[ca_policy(state="disabled", strength_id="other")])
    assert plan.empty


def test_ambiguous_ca_policy_is_an_error() -> None:
    """Two CA policies with our name block the plan."""
    plan = plan_for(desired(conditionalAccess=ca_section()), cas=[ca_policy("a"), ca_policy("b")])
    assert codes(plan.errors) == ["ca_ambiguous"]


# --- state hash ------------------------------------------------------------------------------------------
def test_state_hash_ignores_volatile_fields_and_order() -> None:
    """The hash ignores @odata annotations, key order and unrelated strengths/policies."""
    state = desired(conditionalAccess=ca_section())
    base = state_hash(state, legacy_fido2(), OURS, [ca_policy()])
    raw = legacy_fido2()
    raw["@odata.context"] = "something else"
    reordered = dict(reversed(list(raw.items())))
    assert state_hash(state, reordered, [*OTHER_STRENGTHS, *OURS], [ca_policy("z", "Other"), ca_policy()]) == base


def test_state_hash_changes_with_the_tenant() -> None:
    """A real change in the FIDO2 config, our strength, or our CA policy changes the hash."""
    state = desired(conditionalAccess=ca_section())
    base = state_hash(state, legacy_fido2(), OURS, [ca_policy()])
    assert state_hash(state, legacy_fido2(aaguids=[ANDROID]), OURS, [ca_policy()]) != base
    assert state_hash(state, legacy_fido2(), [strength(aaguids=[ANDROID])], [ca_policy()]) != base
    assert state_hash(state, legacy_fido2(), OURS, [ca_policy(state="enabled")]) != base
    assert plan_for(state, cas=[ca_policy()]).state_hash == base


def test_plan_inputs_are_not_mutated_and_writes_are_fresh() -> None:
    """build_plan never mutates its inputs, and its bodies share nothing with them."""
    raw = profiles_fido2([profile(aaguids=[YUBIKEY])])
    strengths = [strength(aaguids=[ANDROID])]
    cas = [ca_policy(exclude_users=[])]
    snapshot = copy.deepcopy((raw, strengths, cas))
    plan = plan_for(desired(conditionalAccess=ca_section()), fido2=raw, strengths=strengths, cas=cas)
    for w in plan.writes:
        w["body"].clear()
    assert (raw, strengths, cas) == snapshot


# --- emergency-access exclusion ---------------------------------------------------------------------------
def plan_with_ca(state, cas):  # type: ignore[no-untyped-def]
    """build_plan against a legacy tenant with our strength and these CA policies."""
    return build_plan(state, legacy_fido2(), OURS, cas, {g: security_group(g) for g in state.group_ids()})


def test_creating_an_enforced_policy_that_excludes_nobody_needs_emergency_acceptance():
    """Creating an `enabled` CA policy with no excluded users or groups names it in the plan."""
    plan = plan_with_ca(desired(conditionalAccess=ca_section(state="enabled", excludeUsers=[])), [])
    assert plan.unexcluded_ca == ["Require Authenticator passkey"]
    assert plan.requires_emergency_acceptance
    again = plan_from_json(plan_to_json(plan))
    assert again.unexcluded_ca == plan.unexcluded_ca and again.requires_emergency_acceptance
    assert "emergency-access" in render_plan_table(plan)


def test_switching_an_unexcluded_policy_to_enabled_needs_emergency_acceptance():
    """Switching an existing CA policy to `enabled` while it excludes nobody needs the acceptance too."""
    state = desired(conditionalAccess=ca_section(state="enabled", excludeUsers=[]))
    plan = plan_with_ca(state, [ca_policy(exclude_users=[])])
    assert [w["op"] for w in plan.writes] == ["update_ca_policy"]
    assert plan.requires_emergency_acceptance


def test_an_exclusion_or_report_only_or_no_ca_write_needs_no_emergency_acceptance():
    """An excluded group, a report-only state, or a plan that does not write the CA policy: no acceptance."""
    excluded = desired(conditionalAccess=ca_section(state="enabled", excludeUsers=[],
                                                    excludeGroups=["44444444-4444-4444-4444-444444444444"]))
    assert not plan_with_ca(excluded, []).requires_emergency_acceptance
    report_only = desired(conditionalAccess=ca_section(excludeUsers=[]))
    assert not plan_with_ca(report_only, []).requires_emergency_acceptance
    untouched = desired(conditionalAccess=ca_section(state="enabled", excludeUsers=[]))
    assert not plan_with_ca(untouched, [ca_policy(state="enabled", exclude_users=[])]).unexcluded_ca
