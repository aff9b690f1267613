"""lockout_impact: which registered passkeys stop working after a plan, and when acceptance is needed."""
from __future__ import annotations

from typing import Any

from shared.policy.lockout import attach_lockout, lockout_impact
from shared.policy.plan import build_plan
from shared.policy.plan_model import LockoutRow, Plan
from tests.policy.policy_factories import (
    ANDROID,
    IOS,
    ONEPASSWORD,
    YUBIKEY,
    desired,
    legacy_fido2,
    method,
    restrictions,
    security_group,
    strength,
)


def key(mid: str, aaguid: str | None, model: str | None = None) -> dict[str, Any]:
    """A raw fido2Method."""
    raw: dict[str, Any] = {"id": mid, "displayName": "key", "createdDateTime": "2026-01-01T00:00:00Z",
                           "passkeyType": "deviceBound", "attestationLevel": "attested"}
    if aaguid is not None:
        raw["aaGuid"] = aaguid
    if model is not None:
        raw["model"] = model
    return raw


PASSKEYS = {
    "u-2": [key("m-android", ANDROID, "Authenticator"), key("m-1p", ONEPASSWORD)],
    "u-1": [key("m-yubi", YUBIKEY.upper(), "YubiKey 5 NFC")],
}
UPNS = {"u-1": "ada@contoso.com", "u-2": "bob@contoso.com"}


def plan_with(fido2: dict[str, Any], **doc_overrides: Any) -> Plan:
    """A plan against `fido2` with our strength already in place."""
    state = desired(**doc_overrides)
    return build_plan(state, fido2, [strength(aaguids=[ANDROID, IOS])], [],
                      {g: security_group(g) for g in state.group_ids()})


def test_removed_aaguid_locks_out_its_passkeys() -> None:
    """Removing YubiKey from the allow list lists Ada's YubiKey with UPN, the document's name and model."""
    plan = plan_with(legacy_fido2(aaguids=[ANDROID, IOS, YUBIKEY, ONEPASSWORD]),
                     passkeyMethod=method(keyRestrictions=restrictions(remove=[YUBIKEY])),
                     aaguidNames={YUBIKEY: "YubiKey 5 series"})
    rows = lockout_impact(plan, PASSKEYS, UPNS)
    assert rows == [LockoutRow("u-1", "ada@contoso.com", "m-yubi", YUBIKEY, "YubiKey 5 series", "YubiKey 5 NFC",
                               "method")]


def test_block_to_allow_locks_out_unlisted_providers() -> None:
    """Switching from block to allow hits every passkey not on the new list, named from the shipped list."""
    plan = plan_with(legacy_fido2(aaguids=[YUBIKEY], mode="block"))
    rows = lockout_impact(plan, PASSKEYS, UPNS)
    assert [(r.passkey_id, r.name) for r in rows] == [("m-1p", "1Password")]  # YubiKey was blocked already


def test_enabling_enforcement_locks_out_unlisted() -> None:
    """Turning enforcement on hits passkeys not on the list (stored AAGUIDs stay allowed)."""
    plan = plan_with(legacy_fido2(aaguids=[YUBIKEY], enforced=False))
    assert [r.passkey_id for r in lockout_impact(plan, PASSKEYS, UPNS)] == ["m-1p"]


def test_disabling_the_method_locks_out_everyone() -> None:
    """state -> disabled hits every passkey that works today (here: all, restrictions are off)."""
    plan = plan_with(legacy_fido2(enforced=False), passkeyMethod=method(state="disabled"))
    assert len(lockout_impact(plan, PASSKEYS, UPNS)) == 3
    restricted = plan_with(legacy_fido2(), passkeyMethod=method(state="disabled"))
    assert [r.passkey_id for r in lockout_impact(restricted, PASSKEYS, UPNS)] == ["m-android"]


def test_strength_narrowing_rows_have_strength_scope() -> None:
    """A passkey that still signs in but no longer satisfies the strength is a "strength" row."""
    state = desired()
    plan = build_plan(state, legacy_fido2(aaguids=[ANDROID, IOS, ONEPASSWORD]),
                      [strength(aaguids=[ANDROID, IOS, ONEPASSWORD])], [], {})
    rows = lockout_impact(plan, PASSKEYS, UPNS)
    assert [(r.passkey_id, r.scope) for r in rows] == [("m-1p", "strength")]


def test_passkey_without_aaguid_is_reported() -> None:
    """A passkey with no AAGUID is never on an allow list: it is a row, named as such."""
    plan = plan_with(legacy_fido2(enforced=False, aaguids=[]))
    rows = lockout_impact(plan, {"u-3": [key("m-x", None)]}, {})
    assert [(r.aaguid, r.name, r.upn) for r in rows] == [("", "(no AAGUID)", None)]


def test_acceptance_after_evaluation() -> None:
    """Evaluable narrowing needs acceptance until evaluated; with no one hit it no longer does."""
    plan = plan_with(legacy_fido2(aaguids=[ANDROID, IOS, ONEPASSWORD]),
                     passkeyMethod=method(keyRestrictions=restrictions(remove=[ONEPASSWORD])))
    assert plan.requires_acceptance and not plan.lockout_evaluated
    nobody = attach_lockout(plan, {"u-1": [key("m-a", ANDROID)]}, UPNS)
    assert nobody.lockout_evaluated and not nobody.lockout and not nobody.requires_acceptance
    somebody = attach_lockout(plan, PASSKEYS, UPNS)
    assert [r.passkey_id for r in somebody.lockout] == ["m-1p"] and somebody.requires_acceptance
    assert plan.lockout == [] and not plan.lockout_evaluated  # attach returns a copy


def test_unevaluable_narrowing_always_needs_acceptance() -> None:
    """Narrowing targets cannot be evaluated: acceptance is needed even with no lockout rows."""
    gid = "11111111-1111-1111-1111-111111111111"
    plan = plan_with(legacy_fido2(), passkeyMethod=method(includeTargets=[gid]))
    assert attach_lockout(plan, {}, {}).requires_acceptance


def test_no_narrowing_no_rows() -> None:
    """A plan that only adds AAGUIDs hits nobody and needs no acceptance."""
    plan = plan_with(legacy_fido2(aaguids=[YUBIKEY, ONEPASSWORD]))
    assert lockout_impact(plan, PASSKEYS, UPNS) == []
    assert not plan.requires_acceptance and not plan.needs_lockout_evaluation
