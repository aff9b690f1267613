"""The passkey method's half of the plan: minimal PATCH bodies, the AAGUID merge, block-to-allow, profiles
mode, targets and group checks, and the method's warnings."""
from __future__ import annotations

import copy

from shared.policy.plan_method import MANY_TARGETS, merge_aaguids
from tests.policy.policy_factories import (
    ANDROID,
    BREAK_GLASS,
    DEFAULT_PROFILE_ID,
    FIDO2_TYPE,
    GROUP_A,
    GROUP_B,
    GROUP_M365,
    IOS,
    ONEPASSWORD,
    YUBIKEY,
    ca_section,
    codes,
    desired,
    fido2_body,
    legacy_fido2,
    m365_group,
    method,
    plan_for,
    profile,
    profiles_fido2,
    restrictions,
    security_group,
    writes_of,
)


# --- the method ------------------------------------------------------------------------------------------
def test_matching_tenant_gives_an_empty_plan() -> None:
    """When the tenant already matches, nothing is written and nothing needs acceptance."""
    plan = plan_for()
    assert plan.empty and not plan.changes and not plan.narrowing and not plan.errors
    assert not plan.requires_acceptance


def test_patch_body_has_odata_type_and_only_differences() -> None:
    """A single differing property yields a body with @odata.type and that property only."""
    body = fido2_body(plan_for(fido2=legacy_fido2(attestation=True)))
    assert body == {"@odata.type": FIDO2_TYPE, "isAttestationEnforced": False}


def test_new_aaguids_are_added_and_existing_kept() -> None:
    """The allow list becomes current + desired, current order first; adding is not narrowing."""
    plan = plan_for(fido2=legacy_fido2(aaguids=[YUBIKEY]))
    body = fido2_body(plan)
    assert body["keyRestrictions"] == {"isEnforced": True, "enforcementType": "allow",
                                       "aaGuids": [YUBIKEY, ANDROID, IOS]}
    assert not plan.narrowing and not plan.requires_acceptance
    (row,) = plan.changes
    assert row.field == "keyRestrictions.aaGuids" and row.note == "+2 added"


def test_aaguid_is_dropped_only_when_listed_in_remove() -> None:
    """An AAGUID disappears only through remove, and that is narrowing that needs a lockout evaluation."""
    keep = plan_for(fido2=legacy_fido2(aaguids=[YUBIKEY, ANDROID, IOS]))
    assert keep.empty
    state = desired(passkeyMethod=method(keyRestrictions=restrictions(remove=[YUBIKEY.upper()])))
    plan = plan_for(state, fido2=legacy_fido2(aaguids=[ANDROID, YUBIKEY, IOS]))
    assert fido2_body(plan)["keyRestrictions"]["aaGuids"] == [ANDROID, IOS]
    (narrow,) = plan.narrowing
    assert narrow.kind == "aaguids_removed" and narrow.aaguids == (YUBIKEY,) and narrow.evaluable
    assert plan.requires_acceptance and plan.needs_lockout_evaluation


def test_merge_helper_is_case_insensitive_and_stable() -> None:
    """merge_aaguids dedupes across case, keeps current order, lowercases GUIDs, keeps unknown strings."""
    assert merge_aaguids([IOS.upper(), "odd-entry"], [ANDROID, IOS], []) == [IOS, "odd-entry", ANDROID]
    assert merge_aaguids([IOS, YUBIKEY], [], [YUBIKEY.upper()]) == [IOS]


def test_uppercase_current_aaguids_need_no_write() -> None:
    """The same AAGUIDs in another case are not a change."""
    assert plan_for(fido2=legacy_fido2(aaguids=[ANDROID.upper(), IOS.upper()])).empty


def test_block_mode_tenant_switch_is_spelled_out() -> None:
    """Block to allow: change rows, a warning listing what was blocked, and narrowing."""
    plan = plan_for(fido2=legacy_fido2(aaguids=[YUBIKEY, ONEPASSWORD], mode="block"))
    kr = fido2_body(plan)["keyRestrictions"]
    assert kr == {"isEnforced": True, "enforcementType": "allow", "aaGuids": [ANDROID, IOS]}
    assert any(c.field == "keyRestrictions.enforcementType" and (c.before, c.after) == ("block", "allow")
               for c in plan.changes)
    (warning,) = [w for w in plan.warnings if w.code == "block_to_allow"]
    assert "ONLY the listed keys" in warning.message
    assert YUBIKEY in warning.message and "1Password" in warning.message
    assert [n.kind for n in plan.narrowing] == ["block_to_allow"]
    assert plan.requires_acceptance


def test_enabling_enforcement_keeps_stored_aaguids_and_narrows() -> None:
    """Turning enforcement on keeps the AAGUIDs stored in the policy and is narrowing."""
    plan = plan_for(fido2=legacy_fido2(aaguids=[YUBIKEY], enforced=False))
    assert fido2_body(plan)["keyRestrictions"]["aaGuids"] == [YUBIKEY, ANDROID, IOS]
    assert [n.kind for n in plan.narrowing] == ["enforcement_enabled"]


def test_disabling_the_method_is_narrowing() -> None:
    """state enabled -> disabled is narrowing."""
    plan = plan_for(desired(passkeyMethod=method(state="disabled")))
    assert fido2_body(plan)["state"] == "disabled"
    assert "state_disabled" in [n.kind for n in plan.narrowing]


def test_enabling_a_disabled_method_is_not_narrowing() -> None:
    """Enabling the method (with restrictions) shrinks nothing: nobody could use passkeys before."""
    plan = plan_for(fido2=legacy_fido2(state="disabled", enforced=False, aaguids=[]))
    assert fido2_body(plan)["state"] == "enabled"
    assert not plan.narrowing


def test_relaxing_enforcement_is_not_narrowing() -> None:
    """Turning enforcement off widens access."""
    plan = plan_for(desired(passkeyMethod=method(keyRestrictions=restrictions(enforced=False))))
    assert fido2_body(plan)["keyRestrictions"]["isEnforced"] is False
    assert not plan.narrowing
    assert "restrictions_not_enforced" in codes(plan.warnings)


def test_allow_to_block_switch() -> None:
    """Allow to block discards the old allow list (it meant the opposite) and is narrowing."""
    state = desired(passkeyMethod=method(keyRestrictions=restrictions(enforcementType="block", aaguids=[YUBIKEY])))
    plan = plan_for(state, fido2=legacy_fido2(aaguids=[ANDROID, IOS, ONEPASSWORD]))
    assert fido2_body(plan)["keyRestrictions"]["aaGuids"] == [YUBIKEY]
    assert [n.kind for n in plan.narrowing] == ["allow_to_block"]


def test_block_list_growth_is_narrowing() -> None:
    """Adding to an enforced block list is narrowing."""
    state = desired(passkeyMethod=method(keyRestrictions=restrictions(enforcementType="block", aaguids=[YUBIKEY])))
    plan = plan_for(state, fido2=legacy_fido2(aaguids=[ONEPASSWORD], mode="block"))
    assert fido2_body(plan)["keyRestrictions"]["aaGuids"] == [ONEPASSWORD, YUBIKEY]
    assert [(n.kind, n.aaguids) for n in plan.narrowing] == [("aaguids_blocked", (YUBIKEY,))]


def test_unknown_key_restriction_fields_survive() -> None:
    """Fields of keyRestrictions we do not manage are sent back as read."""
    raw = legacy_fido2(aaguids=[YUBIKEY])
    raw["keyRestrictions"]["futureField"] = {"x": 1}
    assert fido2_body(plan_for(fido2=raw))["keyRestrictions"]["futureField"] == {"x": 1}


# --- profiles mode -------------------------------------------------------------------------------------
def test_profiles_mode_sends_the_full_profile_list_as_read() -> None:
    """Profiles mode: the whole passkeyProfiles list, other profiles and fields exactly as read."""
    other = profile("p-other", "Contractors", passkey_types="synced", aaguids=[YUBIKEY])
    other["futureField"] = [1, 2]
    managed = profile(passkey_types="deviceBound,synced", attestation="registrationOnly", aaguids=[ONEPASSWORD])
    raw = profiles_fido2([other, managed])
    before = copy.deepcopy(raw)
    plan = plan_for(fido2=raw)
    body = fido2_body(plan)
    assert set(body) == {"@odata.type", "passkeyProfiles"}
    sent_other, sent_managed = body["passkeyProfiles"]
    assert sent_other == other
    assert sent_managed["passkeyTypes"] == "deviceBound,synced"
    assert sent_managed["attestationEnforcement"] == "disabled"
    assert sent_managed["keyRestrictions"]["aaGuids"] == [ONEPASSWORD, ANDROID, IOS]
    assert {k: v for k, v in sent_managed.items() if k not in ("attestationEnforcement", "keyRestrictions")} == {
        k: v for k, v in managed.items() if k not in ("attestationEnforcement", "keyRestrictions")}
    assert raw == before  # the input is never mutated
    assert plan.mode == "profiles" and plan.profile == {"id": DEFAULT_PROFILE_ID, "name": "Default passkey profile"}


def test_profiles_mode_ignores_deprecated_top_level() -> None:
    """In profiles mode the deprecated top-level keyRestrictions/isAttestationEnforced are not compared."""
    plan = plan_for(fido2=profiles_fido2())  # top level holds YUBIKEY and attestation on; profile matches
    assert plan.empty


def test_profiles_mode_managed_profile_named_in_document() -> None:
    """passkeyMethod.passkeyProfile picks which profile the plan changes."""
    raw = profiles_fido2([profile(), profile("p-2", "Pilot", aaguids=[ANDROID])])
    plan = plan_for(desired(passkeyMethod=method(passkeyProfile="Pilot")), fido2=raw)
    first, second = fido2_body(plan)["passkeyProfiles"]
    assert first == raw["passkeyProfiles"][0]
    assert second["keyRestrictions"]["aaGuids"] == [ANDROID, IOS]


def test_missing_profile_blocks_the_plan() -> None:
    """A profile the tenant lacks is a blocking error and no FIDO2 write is planned."""
    plan = plan_for(desired(passkeyMethod=method(passkeyProfile="Nope")), fido2=profiles_fido2())
    assert codes(plan.errors) == ["profile_not_found"] and plan.blocked
    assert not writes_of(plan, "patch_fido2")


def test_profile_named_on_legacy_tenant_warns() -> None:
    """A profile named in the document on a not-yet-migrated tenant is a warning, not an error."""
    plan = plan_for(desired(passkeyMethod=method(passkeyProfile="Default passkey profile")))
    assert "profile_ignored" in codes(plan.warnings) and not plan.errors


def test_new_targets_in_profiles_mode_get_the_managed_profile() -> None:
    """A new include target in profiles mode is allowed the managed profile."""
    state = desired(passkeyMethod=method(includeTargets=[GROUP_A]))
    body = fido2_body(plan_for(state, fido2=profiles_fido2()))
    assert body["includeTargets"] == [{"targetType": "group", "id": GROUP_A, "isRegistrationRequired": False,
                                       "allowedPasskeyProfiles": [DEFAULT_PROFILE_ID]}]


# --- targets and groups ----------------------------------------------------------------------------------
def test_targets_keep_existing_entries_as_read() -> None:
    """Existing include targets are sent back as read; new ones are built; removal of a group narrows."""
    existing = {"targetType": "group", "id": GROUP_A, "isRegistrationRequired": True}
    raw = legacy_fido2(include=[existing, {"targetType": "group", "id": GROUP_M365}])
    state = desired(passkeyMethod=method(includeTargets=[GROUP_A, GROUP_B]))
    plan = plan_for(state, fido2=raw)
    assert fido2_body(plan)["includeTargets"] == [
        existing, {"targetType": "group", "id": GROUP_B, "isRegistrationRequired": False}]
    (narrow,) = plan.narrowing
    assert narrow.kind == "targets_narrowed" and not narrow.evaluable and GROUP_M365 in narrow.detail
    assert plan.requires_acceptance


def test_switching_groups_to_all_users_is_not_narrowing() -> None:
    """Replacing groups with all_users widens access."""
    plan = plan_for(fido2=legacy_fido2(include=[{"targetType": "group", "id": GROUP_A}]))
    assert fido2_body(plan)["includeTargets"][0]["id"] == "all_users"
    assert not plan.narrowing


def test_target_order_does_not_matter() -> None:
    """The same targets in another order are not a change."""
    state = desired(passkeyMethod=method(includeTargets=[GROUP_A, GROUP_B]))
    raw = legacy_fido2(include=[{"targetType": "group", "id": GROUP_B.upper()}, {"targetType": "group", "id": GROUP_A}])
    assert plan_for(state, fido2=raw).empty


def test_new_exclusion_is_narrowing() -> None:
    """Excluding a group is narrowing that cannot be evaluated."""
    plan = plan_for(desired(passkeyMethod=method(excludeTargets=[GROUP_A])))
    assert fido2_body(plan)["excludeTargets"] == [{"targetType": "group", "id": GROUP_A}]
    assert [n.kind for n in plan.narrowing] == ["targets_narrowed"]


def test_group_problems_are_blocking_errors() -> None:
    """Missing, Microsoft 365, non-security and un-looked-up groups are errors naming the group."""
    state = desired(passkeyMethod=method(includeTargets=[GROUP_A, {"id": GROUP_B, "displayName": "Pilot"},
                                                         GROUP_M365], excludeTargets=[BREAK_GLASS]))
    not_security = {"id": GROUP_A, "displayName": "Distribution", "securityEnabled": False, "groupTypes": []}
    plan = plan_for(state, groups={GROUP_A: not_security, GROUP_B: None, GROUP_M365: m365_group(GROUP_M365)})
    messages: dict[str, list[str]] = {i.code: [] for i in plan.errors}
    for i in plan.errors:
        messages[i.code].append(i.message)
    assert plan.blocked
    assert any(GROUP_B in m and "Pilot" in m for m in messages["group_not_found"])
    assert any("Team site" in m and "Microsoft 365" in m for m in messages["group_not_security"])
    assert any("Distribution" in m for m in messages["group_not_security"])
    assert any(BREAK_GLASS in m for m in messages["group_not_looked_up"])


def test_ca_groups_are_checked() -> None:
    """CA include/exclude groups must exist and be security-enabled."""
    state = desired(conditionalAccess=ca_section(includeGroups=[GROUP_A], excludeGroups=[GROUP_B]))
    plan = plan_for(state, groups={GROUP_A: security_group(GROUP_A), GROUP_B: None})
    assert [(i.code, GROUP_B in i.message) for i in plan.errors] == [("group_not_found", True)]


def test_many_targets_warn_with_the_workaround() -> None:
    """More than MANY_TARGETS include targets warns and points to the single-group workaround."""
    gids = [f"{i:08x}-0000-0000-0000-000000000000" for i in range(MANY_TARGETS + 1)]
    plan = plan_for(desired(passkeyMethod=method(includeTargets=gids)))
    (warning,) = [w for w in plan.warnings if w.code == "many_targets"]
    assert "single security group" in warning.message and "same operation" in warning.message
    few = plan_for(desired(passkeyMethod=method(includeTargets=gids[:MANY_TARGETS])))
    assert "many_targets" not in codes(few.warnings)


def test_recommendation_warnings() -> None:
    """Self-service off and attestation on are warned about."""
    plan = plan_for(desired(passkeyMethod=method(selfServiceRegistration=False, attestationEnforced=True)))
    assert {"self_service_off", "attestation_enforced"} <= set(codes(plan.warnings))
    assert fido2_body(plan) == {"@odata.type": FIDO2_TYPE, "isSelfServiceRegistrationAllowed": False,
                                "isAttestationEnforced": True}
