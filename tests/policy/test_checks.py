"""Compliance checks: each check's pass, fail and skip, and the report's verdict."""
from __future__ import annotations

from typing import Any

import pytest

from shared.policy.checks import CHECKS, Check, CheckContext, Report, build_check_context, run_checks
from shared.policy.document import DesiredState
from tests.policy.policy_factories import (
    ANDROID,
    GROUP_A,
    IOS,
    ONEPASSWORD,
    YUBIKEY,
    ca_policy,
    ca_section,
    desired,
    legacy_fido2,
    method,
    profile,
    profiles_fido2,
    restrictions,
    strength,
)

GOOD_STRENGTHS = [strength(aaguids=[ANDROID, IOS])]


def context(state: DesiredState | None = None, fido2: dict[str, Any] | None = None, strengths: Any = None,
            cas: Any = None, last: list[str] | None = None) -> CheckContext:
    """A check context over a compliant tenant unless told otherwise."""
    return build_check_context(state or desired(), fido2 if fido2 is not None else legacy_fido2(),
                               strengths if strengths is not None else GOOD_STRENGTHS, cas, last)


def result(check_id: str, ctx: CheckContext) -> tuple[str, str]:
    """(status, reason) of one check."""
    [check] = [c for c in CHECKS if c.id == check_id]
    r = check.fn(ctx)
    assert r.id == check_id
    return r.status, r.reason


def test_checks_have_stable_unique_ids_and_texts() -> None:
    """Every check has a unique PG- id, a title, a rationale and a remediation."""
    ids = [c.id for c in CHECKS]
    assert len(ids) == len(set(ids)) == 13
    for c in CHECKS:
        assert c.id.startswith("PG-") and c.title and c.rationale and c.remediation


def test_compliant_tenant_passes() -> None:
    """A tenant that follows the seed and the document passes every applicable check."""
    state = desired(conditionalAccess=ca_section())
    report = run_checks(context(state, cas=[ca_policy()], last=[ANDROID, IOS]))
    assert report.passed, report.failed
    assert {r.status for r in report.results} == {"passed"}


def test_method_disabled_fails_and_skip_when_document_disables() -> None:
    """PG-FIDO2-001 fails on a disabled method, is skipped when the document disables it on purpose."""
    assert result("PG-FIDO2-001", context(fido2=legacy_fido2(state="disabled")))[0] == "failed"
    off = desired(passkeyMethod=method(state="disabled"))
    assert result("PG-FIDO2-001", context(off, fido2=legacy_fido2(state="disabled")))[0] == "skipped"


def test_targets_check() -> None:
    """PG-FIDO2-002 names missing and unexpected targets."""
    state = desired(passkeyMethod=method(includeTargets=[GROUP_A]))
    status, reason = result("PG-FIDO2-002", context(state))
    assert status == "failed" and GROUP_A in reason and "all_users" in reason
    raw = legacy_fido2(include=[{"targetType": "group", "id": GROUP_A.upper()}])
    assert result("PG-FIDO2-002", context(state, fido2=raw))[0] == "passed"


def test_self_service_and_attestation_checks() -> None:
    """PG-FIDO2-003 fails when self-service is off; PG-FIDO2-004 fails when attestation is on (profiles too)."""
    assert result("PG-FIDO2-003", context(fido2=legacy_fido2(self_service=False)))[0] == "failed"
    assert result("PG-FIDO2-004", context(fido2=legacy_fido2(attestation=True)))[0] == "failed"
    status, reason = result("PG-FIDO2-004", context(fido2=profiles_fido2([profile(attestation="registrationOnly")])))
    assert status == "failed" and "attestationEnforcement" in reason
    assert result("PG-FIDO2-004", context(fido2=profiles_fido2()))[0] == "passed"


def test_restrictions_allow_check() -> None:
    """PG-FIDO2-005 passes only for enforced allow lists."""
    assert result("PG-FIDO2-005", context())[0] == "passed"
    assert result("PG-FIDO2-005", context(fido2=legacy_fido2(enforced=False)))[0] == "failed"
    status, reason = result("PG-FIDO2-005", context(fido2=legacy_fido2(mode="block", aaguids=[YUBIKEY])))
    assert status == "failed" and "block" in reason


def test_required_aaguids_check() -> None:
    """PG-FIDO2-006 fails naming a missing Authenticator or document AAGUID."""
    status, reason = result("PG-FIDO2-006", context(fido2=legacy_fido2(aaguids=[ANDROID])))
    assert status == "failed" and "Microsoft Authenticator (iOS)" in reason
    state = desired(passkeyMethod=method(keyRestrictions=restrictions(aaguids=[ANDROID, IOS, YUBIKEY])),
                    aaguidNames={YUBIKEY: "YubiKey 5"})
    status, reason = result("PG-FIDO2-006", context(state))
    assert status == "failed" and "YubiKey 5" in reason
    assert result("PG-FIDO2-006", context(state, fido2=legacy_fido2(aaguids=[YUBIKEY, IOS, ANDROID])))[0] == "passed"


def test_vanished_aaguid_check() -> None:
    """PG-FIDO2-007: skipped without history, fails when an AAGUID vanished, passes when it was removed on purpose."""
    assert result("PG-FIDO2-007", context())[0] == "skipped"
    last = [ANDROID, IOS, ONEPASSWORD]
    status, reason = result("PG-FIDO2-007", context(last=last))
    assert status == "failed" and "1Password" in reason
    removed = desired(passkeyMethod=method(keyRestrictions=restrictions(remove=[ONEPASSWORD])))
    status, reason = result("PG-FIDO2-007", context(removed, last=last))
    assert status == "passed" and "explicitly removed" in reason
    assert result("PG-FIDO2-007", context(fido2=legacy_fido2(enforced=False), last=last))[0] == "passed"


def test_strength_check() -> None:
    """PG-AUTHSTR-001 fails when missing, built in, multi-method, unrestricted or with other AAGUIDs."""
    cases = {
        "no authentication strength": [],
        "built-in": [strength(policy_type="builtIn", aaguids=[ANDROID, IOS])],
        "password,sms": [strength(combos=["fido2", "password,sms"], aaguids=[ANDROID, IOS])],
        "any passkey": [strength()],
        "unexpected AAGUIDs": [strength(aaguids=[ANDROID, IOS, YUBIKEY])],
        "missing AAGUIDs": [strength(aaguids=[ANDROID])],
        "are named": [strength("a"), strength("b")],
    }
    for expected, strengths in cases.items():
        status, reason = result("PG-AUTHSTR-001", context(strengths=strengths))
        assert status == "failed" and expected in reason, (expected, reason)
    assert result("PG-AUTHSTR-001", context(strengths=[strength(aaguids=[IOS, ANDROID.upper()])]))[0] == "passed"


def test_ca_checks_skipped_when_not_managed() -> None:
    """The CA checks are skipped without a conditionalAccess section."""
    ctx = context(cas=[ca_policy(state="disabled")])
    for cid in ("PG-CA-001", "PG-CA-002", "PG-CA-003", "PG-CA-004"):
        assert result(cid, ctx)[0] == "skipped"


@pytest.mark.parametrize(("cas", "check_id", "expected"), [
    ([], "PG-CA-001", "no Conditional Access policy"),
    ([ca_policy(strength_id="other")], "PG-CA-001", "instead of s-ours"),
    ([ca_policy(strength_id=None)], "PG-CA-001", "(none)"),
    ([ca_policy(state="enabled")], "PG-CA-002", "instead of enabledForReportingButNotEnforced"),
    ([ca_policy(exclude_users=[])], "PG-CA-003", "no user or group"),
    ([ca_policy("a"), ca_policy("b")], "PG-CA-002", "are named"),
])
def test_ca_checks_fail(cas: list[dict[str, Any]], check_id: str, expected: str) -> None:
    """Each CA check fails with a reason saying what is wrong."""
    status, reason = result(check_id, context(desired(conditionalAccess=ca_section()), cas=cas))
    assert status == "failed" and expected in reason


def test_ca_requires_strength_fails_when_strength_missing() -> None:
    """PG-CA-001 fails when the strength it should require does not exist."""
    status, reason = result("PG-CA-001", context(desired(conditionalAccess=ca_section()), strengths=[],
                                                 cas=[ca_policy()]))
    assert status == "failed" and "missing" in reason


def test_unreadable_profile_fails_method_checks() -> None:
    """A document naming a missing profile fails the method checks with the lookup problem."""
    ctx = context(desired(passkeyMethod=method(passkeyProfile="Nope")), fido2=profiles_fido2())
    assert ctx.fido2 is None
    status, reason = result("PG-FIDO2-005", ctx)
    assert status == "failed" and "Nope" in reason


def test_report_verdict_and_counts() -> None:
    """A report passes when nothing failed; skipped checks do not fail it; a crashing check fails."""
    report = run_checks(context())
    assert report.passed and report.counts() == {"passed": 8, "failed": 0, "skipped": 5}
    bad = run_checks(context(fido2=legacy_fido2(enforced=False)))
    assert not bad.passed and [r.id for r in bad.failed] == ["PG-FIDO2-005", "PG-DOC-001"]

    def boom(_: CheckContext) -> Any:
        raise RuntimeError("bug")

    crashing = Check("PG-TEST-001", "t", "r", "m", boom)
    crashed = run_checks(context(), [crashing])
    assert isinstance(crashed, Report) and crashed.results[0].status == "failed" and not crashed.passed


# --- the document's Conditional Access scope and grant (issue 11: verify said COMPLIANT on CA drift) -----
@pytest.mark.parametrize(("ca", "expected"), [
    (ca_policy(include_users=["All"], include_groups=[]), "includeGroups"),
    (ca_policy(include_groups=[GROUP_A, "g-extra"]), "unexpected includeGroups: g-extra"),
    (ca_policy(exclude_users=[]), "excludeUsers"),
    (ca_policy(exclude_groups=["g-x"]), "unexpected excludeGroups: g-x"),
    (ca_policy(apps=["All"]), "includeApplications"),
])
def test_ca_scope_drift_fails(ca: dict[str, Any], expected: str) -> None:
    """PG-CA-004 fails when the CA policy's users, groups or applications differ from the document's."""
    state = desired(conditionalAccess=ca_section(includeUsers=[], includeGroups=[GROUP_A]))
    good = ca_policy(include_users=[], include_groups=[GROUP_A])
    assert result("PG-CA-004", context(state, cas=[good]))[0] == "passed"
    status, reason = result("PG-CA-004", context(state, cas=[ca]))
    assert status == "failed" and expected in reason, reason


def test_ca_widened_to_all_users_fails_the_report() -> None:
    """The issue's reproduction: the document includes one group, the tenant's CA policy now covers All."""
    state = desired(conditionalAccess=ca_section(includeUsers=[], includeGroups=[GROUP_A]))
    report = run_checks(context(state, cas=[ca_policy(include_users=["All"], include_groups=[])], last=[ANDROID, IOS]))
    assert not report.passed
    assert {r.id for r in report.failed} >= {"PG-CA-004", "PG-DOC-001"}


@pytest.mark.parametrize(("ca", "expected"), [
    (ca_policy(built_in=["mfa"]), "built-in controls: mfa"),
    ({**ca_policy(), "grantControls": {**ca_policy()["grantControls"], "operator": "AND"}}, "operator AND"),
])
def test_ca_grant_drift_fails(ca: dict[str, Any], expected: str) -> None:
    """PG-CA-001 fails when the grant adds a built-in control or is not OR: the strength is then not the rule."""
    status, reason = result("PG-CA-001", context(desired(conditionalAccess=ca_section()), cas=[ca]))
    assert status == "failed" and expected in reason, reason


def test_document_drift_check_names_each_field() -> None:
    """PG-DOC-001 lists every field the plan would change, and passes when there is none."""
    ok = context(desired(conditionalAccess=ca_section()), cas=[ca_policy()])
    assert result("PG-DOC-001", ok)[0] == "passed"
    drifted = context(desired(passkeyMethod=method(selfServiceRegistration=False)),
                      fido2=legacy_fido2(self_service=True))
    status, reason = result("PG-DOC-001", drifted)
    assert status == "failed" and "isSelfServiceRegistrationAllowed" in reason, reason


def test_document_drift_unknown_without_the_method() -> None:
    """PG-DOC-001 fails (it cannot say the tenant matches) when the method configuration was not read."""
    ctx = build_check_context(desired(), None, GOOD_STRENGTHS, None, None)
    status, reason = result("PG-DOC-001", ctx)
    assert status == "failed" and "not read" in reason
