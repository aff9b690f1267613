"""The desired-state document: validation rules, error paths, defaults, the shipped default file, the
normalised JSON and its hash (agreement with the generated JSON Schema: tests/schemas/test_document.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared.errors import InputError
from shared.policy.document import (
    ROOT_FIELD,
    DesiredState,
    desired_hash,
    desired_to_json,
    parse_document,
    validate_document,
)
from tests.policy.policy_factories import (
    ANDROID,
    APP,
    GROUP_A,
    GROUP_B,
    IOS,
    YUBIKEY,
    ca_section,
    detail_of,
    doc,
    method,
    restrictions,
)

ROOT = Path(__file__).resolve().parents[2]


def problems(document: object) -> list[dict[str, str]]:
    """The detail of the InputError the validator raises (fails the test when it does not raise)."""
    with pytest.raises(InputError) as info:
        validate_document(document)
    detail = info.value.detail
    assert isinstance(detail, list) and detail
    return detail


def fields(document: object) -> set[str]:
    """Just the field paths of the problems."""
    return {p["field"] for p in problems(document)}


# --- rules --------------------------------------------------------------------------------------------------
def test_default_document_validates_and_follows_the_seed() -> None:
    """The shipped policy/desired-state.json is valid: all users, self-service on, attestation off, allow list."""
    state = parse_document((ROOT / "policy/desired-state.json").read_bytes())
    m = state.passkey_method
    assert [t.id for t in m.include_targets] == ["all_users"]
    assert m.self_service_registration is True and m.attestation_enforced is False
    assert m.key_restrictions.enforced and m.key_restrictions.enforcement_type == "allow"
    assert set(m.key_restrictions.aaguids) == {ANDROID, IOS}
    assert state.conditional_access is None


def test_defaults_are_filled() -> None:
    """Omitted optional fields take the documented defaults."""
    state = validate_document({"passkeyMethod": {"includeTargets": ["all_users"]},
                               "authenticationStrength": {"displayName": "S"}})
    m = state.passkey_method
    assert (m.state, m.self_service_registration, m.attestation_enforced) == ("enabled", True, False)
    assert m.key_restrictions.aaguids == (ANDROID, IOS) and m.key_restrictions.remove == ()
    assert m.passkey_profile is None and m.exclude_targets == ()
    assert state.authentication_strength.allowed_aaguids == (ANDROID, IOS)
    assert state.authentication_strength.description is None


def test_ca_state_defaults_to_report_only() -> None:
    """A CA section without state starts in report-only mode."""
    section = ca_section()
    del section["state"]
    ca = desired_state(conditionalAccess=section).conditional_access
    assert ca is not None and ca.state == "enabledForReportingButNotEnforced"


def desired_state(**overrides: Any) -> DesiredState:
    """Validate doc(**overrides)."""
    return validate_document(doc(**overrides))


def test_aaguids_are_lowercased() -> None:
    """AAGUIDs, group ids and aaguidNames keys are normalised to lowercase."""
    state = desired_state(
        passkeyMethod=method(includeTargets=[GROUP_A.upper()],
                             keyRestrictions=restrictions(aaguids=[ANDROID.upper(), IOS, YUBIKEY.upper()])),
        aaguidNames={YUBIKEY.upper(): "YubiKey 5"})
    assert state.passkey_method.key_restrictions.aaguids == (ANDROID, IOS, YUBIKEY)
    assert state.passkey_method.include_targets[0].id == GROUP_A
    assert dict(state.aaguid_names) == {YUBIKEY: "YubiKey 5"}


def test_bad_guid_is_named_by_index() -> None:
    """A malformed AAGUID is reported at its exact path."""
    detail = problems(doc(passkeyMethod=method(keyRestrictions=restrictions(aaguids=[ANDROID, IOS, "not-a-guid"]))))
    assert {"field": "passkeyMethod.keyRestrictions.aaguids[2]", "problem": "not a GUID"} in detail


def test_all_problems_are_collected() -> None:
    """Several independent mistakes are all reported in one error."""
    bad = doc(passkeyMethod=method(state="on", selfServiceRegistration="yes",
                                   keyRestrictions=restrictions(aaguids=[ANDROID, IOS, "x"])),
              authenticationStrength={"displayName": ""})
    assert {"passkeyMethod.state", "passkeyMethod.selfServiceRegistration",
            "passkeyMethod.keyRestrictions.aaguids[2]", "authenticationStrength.displayName"} <= fields(bad)


def test_case_insensitive_duplicates_are_rejected() -> None:
    """The same AAGUID in two cases is a duplicate (stricter than the schema's uniqueItems)."""
    detail = problems(doc(passkeyMethod=method(keyRestrictions=restrictions(aaguids=[ANDROID, IOS, ANDROID.upper()]))))
    assert {"field": "passkeyMethod.keyRestrictions.aaguids[2]", "problem": "duplicate of aaguids[0]"} in detail


def test_keep_and_remove_the_same_aaguid_is_rejected() -> None:
    """An AAGUID cannot be both kept and removed."""
    bad = doc(passkeyMethod=method(keyRestrictions=restrictions(aaguids=[ANDROID, IOS, YUBIKEY], remove=[YUBIKEY])))
    assert "passkeyMethod.keyRestrictions.remove[0]" in fields(bad)


def test_missing_authenticator_aaguid_is_an_error_in_allow_mode() -> None:
    """Enforced allow lists must include both Microsoft Authenticator AAGUIDs."""
    detail = problems(doc(passkeyMethod=method(keyRestrictions=restrictions(aaguids=[ANDROID, YUBIKEY]))))
    assert any(p["field"] == "passkeyMethod.keyRestrictions.aaguids" and IOS in p["problem"] for p in detail)


def test_authenticator_cannot_be_removed_in_allow_mode() -> None:
    """Removing an Authenticator AAGUID from an enforced allow list is an error."""
    bad = doc(passkeyMethod=method(keyRestrictions=restrictions(aaguids=[ANDROID, IOS], remove=[IOS.upper()])))
    assert "passkeyMethod.keyRestrictions.remove[0]" in fields(bad)


def test_authenticator_not_required_in_block_mode_or_unenforced() -> None:
    """The Authenticator requirement applies only to enforced allow lists."""
    for kr in (restrictions(enforcementType="block", aaguids=[YUBIKEY]), restrictions(enforced=False, aaguids=[])):
        state = desired_state(passkeyMethod=method(keyRestrictions=kr))
        assert ANDROID not in state.passkey_method.key_restrictions.aaguids


def test_all_users_cannot_be_combined_with_groups() -> None:
    """includeTargets is either all_users alone or groups."""
    assert "passkeyMethod.includeTargets" in fields(doc(passkeyMethod=method(includeTargets=["all_users", GROUP_A])))


def test_targets_accept_objects_with_display_names() -> None:
    """A target may be an object with id and displayName; duplicates by id are rejected."""
    state = desired_state(passkeyMethod=method(includeTargets=[{"id": GROUP_A, "displayName": "Pilot"}, GROUP_B]))
    got = [(t.id, t.display_name) for t in state.passkey_method.include_targets]
    assert got == [(GROUP_A, "Pilot"), (GROUP_B, None)]
    assert "passkeyMethod.includeTargets[1]" in fields(
        doc(passkeyMethod=method(includeTargets=[{"id": GROUP_A}, GROUP_A.upper()])))


def test_exclude_targets_must_be_groups() -> None:
    """all_users is not a valid exclude target."""
    assert "passkeyMethod.excludeTargets[0]" in fields(doc(passkeyMethod=method(excludeTargets=["all_users"])))


def test_include_targets_required_and_not_empty() -> None:
    """includeTargets must be present and non-empty."""
    m = method()
    del m["includeTargets"]
    assert "passkeyMethod.includeTargets" in fields(doc(passkeyMethod=m))
    assert "passkeyMethod.includeTargets" in fields(doc(passkeyMethod=method(includeTargets=[])))


def test_unknown_fields_are_named() -> None:
    """Typos are caught: an unknown key is reported at its path."""
    assert "passkeyMethod.keyRestriction" in fields(doc(passkeyMethod=method(keyRestriction={})))
    assert "extra" in fields({**doc(), "extra": 1})


def test_required_sections() -> None:
    """passkeyMethod and authenticationStrength are required."""
    assert {"passkeyMethod", "authenticationStrength"} <= fields({})


def test_root_must_be_an_object() -> None:
    """A non-object document is reported against the document itself."""
    assert fields([1, 2]) == {ROOT_FIELD}


def test_ca_needs_users_or_groups_and_applications() -> None:
    """A CA section must include someone and name the sensitive applications."""
    assert "conditionalAccess" in fields(doc(conditionalAccess=ca_section(includeUsers=[], includeGroups=[])))
    section = ca_section()
    del section["includeApplications"]
    assert "conditionalAccess.includeApplications" in fields(doc(conditionalAccess=section))
    assert "conditionalAccess.state" in fields(doc(conditionalAccess=ca_section(state="on")))


def test_ca_keywords() -> None:
    """includeUsers accepts "All"; includeApplications accepts All, Office365, MicrosoftAdminPortals."""
    state = desired_state(conditionalAccess=ca_section(includeApplications=["Office365", APP.upper()]))
    assert state.conditional_access is not None
    assert state.conditional_access.include_applications == ("Office365", APP)
    assert "conditionalAccess.excludeUsers[0]" in fields(doc(conditionalAccess=ca_section(excludeUsers=["All"])))


def test_aaguid_names_keys_must_be_guids() -> None:
    """aaguidNames keys are AAGUIDs and values non-empty strings."""
    assert {"aaguidNames.nope", f"aaguidNames.{YUBIKEY}"} <= fields(doc(aaguidNames={"nope": "x", YUBIKEY: ""}))


def test_invalid_json_text_is_an_input_error() -> None:
    """Unparseable text raises InputError naming the document, with the position."""
    with pytest.raises(InputError) as info:
        parse_document('{"passkeyMethod": ')
    assert detail_of(info.value)[0]["field"] == ROOT_FIELD
    assert "line 1" in detail_of(info.value)[0]["problem"]
    with pytest.raises(InputError):
        parse_document('{"a": NaN}')


def test_normalised_json_round_trips() -> None:
    """desired_to_json validates back to the same state, and the hash is stable."""
    state = desired_state(passkeyMethod=method(includeTargets=[{"id": GROUP_A, "displayName": "Pilot"}],
                                               passkeyProfile="Pilot profile"),
                          aaguidNames={YUBIKEY: "YubiKey"}, conditionalAccess=ca_section())
    again = validate_document(desired_to_json(state))
    assert again == state
    assert desired_hash(again) == desired_hash(state)
    assert desired_hash(desired_state()) != desired_hash(state)


def test_error_message_names_first_problem() -> None:
    """The InputError message says how many problems and which is first (for logs and CLI)."""
    with pytest.raises(InputError) as info:
        validate_document(doc(passkeyMethod=method(state="on")))
    assert "passkeyMethod.state" in info.value.message
    error = info.value.to_body()["error"]
    assert isinstance(error, dict) and error["code"] == "badRequest"
