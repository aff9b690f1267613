"""Reading the tenant's raw Graph JSON into normalised views: legacy vs profiles, the managed profile,
strengths among many (multi-method combinations included), CA policies by name."""
from __future__ import annotations

import pytest

from shared.errors import InputError
from shared.policy.current import (
    MODE_LEGACY,
    MODE_PROFILES,
    aaguid_allowed,
    as_list,
    ca_policies_named,
    effective_allowed_aaguids,
    fido2_mode,
    method_summary,
    read_fido2,
    strengths_named,
    strip_volatile,
)
from tests.policy.policy_factories import (
    ANDROID,
    DEFAULT_PROFILE_ID,
    IOS,
    ONEPASSWORD,
    OTHER_STRENGTHS,
    YUBIKEY,
    ca_policy,
    detail_of,
    legacy_fido2,
    profile,
    profiles_fido2,
    strength,
)


def test_legacy_mode_reads_top_level_settings() -> None:
    """Without passkey profiles, attestation and key restrictions come from the top level."""
    view = read_fido2(legacy_fido2(aaguids=[ANDROID, YUBIKEY], attestation=True, mode="block"))
    assert view.mode == MODE_LEGACY
    assert view.attestation_enforced is True
    assert view.key_restrictions.enforcement_type == "block"
    assert view.key_restrictions.aaguids == (ANDROID, YUBIKEY)
    assert view.include_ids == ["all_users"]
    assert view.profile_index is None and view.attestation_field == "isAttestationEnforced"


def test_empty_profile_list_is_legacy() -> None:
    """An empty passkeyProfiles list does not make a tenant profiles-mode."""
    raw = legacy_fido2()
    raw["passkeyProfiles"] = []
    assert fido2_mode(raw) == MODE_LEGACY


def test_profiles_mode_reads_the_default_profile() -> None:
    """With profiles, per-profile settings come from defaultPasskeyProfile, not the deprecated top level."""
    raw = profiles_fido2([profile("p-other", "Other", aaguids=[YUBIKEY]),
                          profile(attestation="registrationOnly", aaguids=[IOS])])
    view = read_fido2(raw)
    assert view.mode == MODE_PROFILES
    assert view.profile_id == DEFAULT_PROFILE_ID and view.profile_index == 1
    assert view.attestation_enforced is True  # registrationOnly
    assert view.key_restrictions.aaguids == (IOS,)  # not the top-level YUBIKEY list


def test_profiles_mode_named_profile_by_name_or_id() -> None:
    """The document may name the managed profile by name (exact, then case-insensitive) or by id."""
    raw = profiles_fido2([profile(), profile("p-2", "Pilot", aaguids=[ONEPASSWORD])])
    for ref in ("Pilot", "pilot", "P-2"):
        view = read_fido2(raw, ref)
        assert view.profile_id == "p-2" and view.key_restrictions.aaguids == (ONEPASSWORD,)


def test_missing_profile_is_an_input_error_naming_the_field() -> None:
    """A profile the tenant does not have raises InputError on passkeyMethod.passkeyProfile."""
    with pytest.raises(InputError) as info:
        read_fido2(profiles_fido2(), "Nope")
    assert detail_of(info.value)[0]["field"] == "passkeyMethod.passkeyProfile"
    assert "Default passkey profile" in info.value.message


def test_single_profile_without_default_id_is_used() -> None:
    """A single profile is the managed one even when defaultPasskeyProfile does not match."""
    raw = profiles_fido2(default="something-else")
    assert read_fido2(raw).profile_id == DEFAULT_PROFILE_ID
    raw["passkeyProfiles"].append(profile("p-2", "Two"))
    with pytest.raises(InputError):
        read_fido2(raw)


def test_missing_or_null_restrictions_read_as_unenforced() -> None:
    """A configuration without keyRestrictions is read as not enforced, allow, empty."""
    raw = legacy_fido2()
    raw["keyRestrictions"] = None
    kr = read_fido2(raw).key_restrictions
    assert (kr.enforced, kr.enforcement_type, kr.aaguids) == (False, "allow", ())


def test_strip_volatile_keeps_odata_type_only() -> None:
    """@odata.context and x@odata.context are dropped at any depth; @odata.type stays."""
    raw = {"@odata.context": "c", "@odata.type": "t", "a": [{"b@odata.context": 1, "@odata.etag": "e", "c": 2}]}
    assert strip_volatile(raw) == {"@odata.type": "t", "a": [{"c": 2}]}
    assert "@odata.context" not in read_fido2(legacy_fido2()).raw


def test_aaguid_allowed_semantics() -> None:
    """Allow lists admit only listed keys, block lists all but listed, unenforced everything (case-insensitive)."""
    allow = method_summary(read_fido2(legacy_fido2(aaguids=[ANDROID])))
    assert aaguid_allowed(allow, ANDROID.upper()) and not aaguid_allowed(allow, IOS)
    block = method_summary(read_fido2(legacy_fido2(aaguids=[ANDROID], mode="block")))
    assert not aaguid_allowed(block, ANDROID) and aaguid_allowed(block, IOS)
    off = method_summary(read_fido2(legacy_fido2(aaguids=[ANDROID], enforced=False)))
    assert aaguid_allowed(off, IOS)
    disabled = method_summary(read_fido2(legacy_fido2(state="disabled")))
    assert not aaguid_allowed(disabled, ANDROID) and aaguid_allowed(disabled, ANDROID, ignore_state=True)


def test_effective_allowed_aaguids() -> None:
    """The allow list is reported only when enforced in allow mode (lowercase, deduplicated)."""
    assert effective_allowed_aaguids(read_fido2(legacy_fido2(aaguids=[ANDROID.upper(), ANDROID, IOS]))) == [
        ANDROID, IOS]
    assert effective_allowed_aaguids(read_fido2(legacy_fido2(mode="block"))) is None
    assert effective_allowed_aaguids(read_fido2(legacy_fido2(enforced=False))) is None


def test_strengths_found_among_many_with_multi_method_combinations() -> None:
    """Our strength is found by name among built-ins and "password,sms" customs, which read unharmed."""
    listing = {"@odata.context": "x", "value": [*OTHER_STRENGTHS, strength(aaguids=[ANDROID])]}
    found = strengths_named(listing, "Authenticator passkey")
    assert [s.id for s in found] == ["s-ours"]
    assert found[0].allowed_aaguids == [ANDROID]
    other = strengths_named(listing, "password and sms")[0]  # case-insensitive fallback
    assert other.allowed_combinations == ("password,sms", "password,voice")
    assert other.allowed_aaguids is None and not other.is_builtin
    assert strengths_named(listing, "Multifactor authentication")[0].is_builtin


def test_exact_name_wins_over_case_insensitive() -> None:
    """An exact displayName match is preferred over case-insensitive ones."""
    listing = [strength("a", "authenticator passkey"), strength("b", "Authenticator passkey")]
    assert [s.id for s in strengths_named(listing, "Authenticator passkey")] == ["b"]
    assert len(strengths_named(listing, "AUTHENTICATOR PASSKEY")) == 2


def test_strength_without_fido2_config_accepts_any_key() -> None:
    """A strength with no FIDO2 combination configuration reports allowed_aaguids None."""
    assert strengths_named([strength()], "Authenticator passkey")[0].allowed_aaguids is None


def test_ca_policy_read() -> None:
    """CA policies are found by name; users, apps and the strength id are read from raw JSON."""
    listing = {"value": [ca_policy("x", "Other"), ca_policy(built_in=["mfa"])]}
    (view,) = ca_policies_named(listing, "Require Authenticator passkey")
    assert view.strength_id == "s-ours" and view.built_in_controls == ("mfa",)
    assert view.include_users == ("All",) and view.grant_operator == "OR"
    assert "authenticationStrength@odata.context" not in view.raw["grantControls"]


def test_as_list_accepts_both_shapes_and_junk() -> None:
    """as_list takes a list or {"value": [...]} and ignores anything else."""
    assert as_list([{"a": 1}, 2]) == [{"a": 1}]
    assert as_list({"value": [{"a": 1}]}) == [{"a": 1}]
    assert as_list(None) == [] and as_list("x") == []

