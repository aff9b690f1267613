"""Compliance checks as data: each has a stable id, a title, why it matters, how to fix it, and a pure
function over a `CheckContext` that returns passed, failed or skipped with a reason.

The checks follow the seed procedure ("Enable Microsoft Authenticator passkey sign in") and the document:
the method is on, targets are as decided, self-service set up is on, attestation is off, key restrictions
are enforced in allow mode with the required AAGUIDs, nothing allowed at the last run silently vanished,
the custom strength exists and matches, and the CA policy (when managed) requires it in the decided state
for the decided users, groups and applications. PG-DOC-001 compares every field the document decides, with
the plan's own diff (`plan.drift`), so whenever `plan` would change something, `verify` fails.

Each check carries the published peer checks it maps to (Maester EIDSCA, CIPP, ScubaGear), kept as data in
`shared/policy/peers.py`, with a note wherever the organisation deliberately differs.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shared.errors import InputError
from shared.policy.aaguids import AUTHENTICATOR_AAGUIDS, aaguid_key, label_of
from shared.policy.current import (
    CaPolicyView,
    Fido2View,
    StrengthView,
    aaguid_allowed,
    ca_policies_named,
    method_summary,
    read_fido2,
    strengths_named,
)
from shared.policy.document import DesiredState
from shared.policy.peers import PeerCheck, peers_of
from shared.policy.plan import drift
from shared.policy.plan_model import ChangeRow

log = logging.getLogger(__name__)

Status = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: `status` and a reason a person can act on."""

    id: str
    status: Status
    reason: str


@dataclass(frozen=True)
class CheckContext:
    """Everything the checks look at. A `*_problem` says why a view is missing (not found, ambiguous)."""

    desired: DesiredState
    fido2: Fido2View | None
    strength: StrengthView | None
    ca: CaPolicyView | None
    last_allowed_aaguids: tuple[str, ...] | None = None
    fido2_problem: str | None = None
    strength_problem: str | None = None
    ca_problem: str | None = None
    drift: tuple[ChangeRow, ...] | None = None


@dataclass(frozen=True)
class Check:
    """A compliance check: metadata next to the pure function that evaluates it, and its peer checks."""

    id: str
    title: str
    rationale: str
    remediation: str
    fn: Callable[[CheckContext], CheckResult]
    peers: tuple[PeerCheck, ...] = ()


@dataclass(frozen=True)
class Report:
    """The results of a run of checks, in check order, with the checks they came from."""

    results: tuple[CheckResult, ...]
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """True when no check failed (skipped checks do not fail a report)."""
        return all(r.status != "failed" for r in self.results)

    @property
    def failed(self) -> list[CheckResult]:
        """The failed results."""
        return [r for r in self.results if r.status == "failed"]

    def counts(self) -> dict[str, int]:
        """How many checks passed, failed and were skipped."""
        out = {"passed": 0, "failed": 0, "skipped": 0}
        for r in self.results:
            out[r.status] += 1
        return out

    def check(self, check_id: str) -> Check:
        """The check with this id."""
        for c in self.checks:
            if c.id == check_id:
                return c
        raise KeyError(check_id)


def build_check_context(desired: DesiredState, fido2_raw: dict[str, Any] | None, strengths_raw: object,
                        ca_raw: object = None, last_allowed_aaguids: Sequence[str] | None = None) -> CheckContext:
    """Read the raw Graph JSON into the views the checks need; lookup problems become `*_problem`.

    `last_allowed_aaguids` is what `current.effective_allowed_aaguids` returned at the previous run
    (None when there was none: check PG-FIDO2-007 is then skipped).
    """
    fido2: Fido2View | None = None
    fido2_problem = None
    if fido2_raw is None:
        fido2_problem = "the FIDO2 method configuration was not read"
    else:
        try:
            fido2 = read_fido2(fido2_raw, desired.passkey_method.passkey_profile)
        except InputError as exc:
            fido2_problem = exc.message
    strength: StrengthView | None = None
    strength_problem = None
    name = desired.authentication_strength.display_name
    matches = strengths_named(strengths_raw, name)
    if len(matches) == 1:
        strength = matches[0]
    elif matches:
        strength_problem = f"{len(matches)} authentication strengths are named {name!r}"
    else:
        strength_problem = f"no authentication strength named {name!r}"
    ca: CaPolicyView | None = None
    ca_problem = None
    if desired.conditional_access is not None:
        ca_name = desired.conditional_access.display_name
        policies = ca_policies_named(ca_raw, ca_name)
        if len(policies) == 1:
            ca = policies[0]
        elif policies:
            ca_problem = f"{len(policies)} Conditional Access policies are named {ca_name!r}"
        else:
            ca_problem = f"no Conditional Access policy named {ca_name!r}"
    last = tuple(last_allowed_aaguids) if last_allowed_aaguids is not None else None
    changes = tuple(drift(desired, fido2_raw, strengths_raw, ca_raw)) if fido2_raw is not None else None
    return CheckContext(desired, fido2, strength, ca, last, fido2_problem, strength_problem, ca_problem, changes)


# --- the checks -----------------------------------------------------------------------------------------
CHECKS: list[Check] = []


def _check(check_id: str, title: str, rationale: str, remediation: str
           ) -> Callable[[Callable[[CheckContext], tuple[Status, str]]], Callable[[CheckContext], CheckResult]]:
    def register(fn: Callable[[CheckContext], tuple[Status, str]]) -> Callable[[CheckContext], CheckResult]:
        def run(ctx: CheckContext) -> CheckResult:
            status, reason = fn(ctx)
            return CheckResult(check_id, status, reason)
        run.__doc__ = fn.__doc__
        run.__name__ = fn.__name__
        CHECKS.append(Check(check_id, title, rationale, remediation, run, peers_of(check_id)))
        return run
    return register


def _no_fido2(ctx: CheckContext) -> tuple[Status, str]:
    return "failed", f"cannot read the Passkey (FIDO2) configuration: {ctx.fido2_problem}"


def _differences(label: str, have: Sequence[str], want: Sequence[str]) -> list[str]:
    """What is missing from `have` and what it has beyond `want` (ids compared case-insensitively)."""
    have_keys, want_keys = {h.lower() for h in have}, {w.lower() for w in want}
    missing = [w for w in want if w.lower() not in have_keys]
    extra = [h for h in have if h.lower() not in want_keys]
    return ([f"{label} missing: {', '.join(missing)}"] if missing else []) + (
        [f"unexpected {label}: {', '.join(extra)}"] if extra else [])


def _labels(aaguids: Sequence[str], ctx: CheckContext) -> str:
    return ", ".join(label_of(a, ctx.desired.aaguid_names) for a in aaguids)


@_check("PG-FIDO2-001", "The Passkey (FIDO2) method is enabled",
        "Users can only register and sign in with Authenticator passkeys when the method is enabled.",
        "Entra admin center > Protection > Authentication methods > Policies > Passkey (FIDO2): Enable, "
        "then Save; or run Passkey Guard's apply.")
def method_enabled(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when the method is enabled; skipped when the document turns it off on purpose."""
    if ctx.fido2 is None:
        return _no_fido2(ctx)
    if ctx.desired.passkey_method.state != "enabled":
        return "skipped", "the desired-state document disables the method"
    if ctx.fido2.state == "enabled":
        return "passed", "the method is enabled"
    return "failed", f"the method is {ctx.fido2.state}"


@_check("PG-FIDO2-002", "The method targets the groups the document names",
        "Targets decide who may use passkeys; an unexpected include widens, an exclusion narrows.",
        "Set include and exclude targets as in the document (only security groups are supported); "
        "or run Passkey Guard's apply.")
def targets_as_desired(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when include and exclude target ids equal the document's (order ignored)."""
    if ctx.fido2 is None:
        return _no_fido2(ctx)
    spec = ctx.desired.passkey_method
    problems = [*_differences("include targets", ctx.fido2.include_ids, [t.id for t in spec.include_targets]),
                *_differences("exclude targets", ctx.fido2.exclude_ids, [t.id for t in spec.exclude_targets])]
    if problems:
        return "failed", "; ".join(problems)
    return "passed", "include and exclude targets are as desired"


@_check("PG-FIDO2-003", "Self-service set up is allowed",
        "With self-service set up off, users cannot register a passkey in MySecurityInfo even when the "
        "method is enabled.",
        "Passkey (FIDO2) > Configure > General: Allow self-service set up = Yes.")
def self_service_on(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when isSelfServiceRegistrationAllowed is true."""
    if ctx.fido2 is None:
        return _no_fido2(ctx)
    if ctx.fido2.self_service_registration:
        return "passed", "self-service set up is allowed"
    note = " (the document turns it off too)" if not ctx.desired.passkey_method.self_service_registration else ""
    return "failed", "self-service set up is off" + note


@_check("PG-FIDO2-004", "Attestation is not enforced",
        "Enforced attestation needs FIDO Alliance metadata and Microsoft's validation; the procedure for "
        "Authenticator passkeys says to leave it off.",
        "Passkey (FIDO2) > Configure > General: Enforce attestation = No.")
def attestation_off(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when attestation is off (legacy isAttestationEnforced, or the profile's attestationEnforcement)."""
    if ctx.fido2 is None:
        return _no_fido2(ctx)
    if not ctx.fido2.attestation_enforced:
        return "passed", "attestation is not enforced"
    note = " (the document enforces it too)" if ctx.desired.passkey_method.attestation_enforced else ""
    return "failed", f"attestation is enforced ({ctx.fido2.attestation_field})" + note


@_check("PG-FIDO2-005", "Key restrictions are enforced in allow mode",
        "An allow list keeps sign-in to the passkey providers the organisation approved.",
        "Passkey (FIDO2) > Configure > Key restriction policy: Enforce key restrictions = Yes, "
        "Restrict specific keys = Allow.")
def restrictions_allow(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when keyRestrictions.isEnforced is true and enforcementType is allow."""
    if ctx.fido2 is None:
        return _no_fido2(ctx)
    kr = ctx.fido2.key_restrictions
    if kr.enforced and kr.enforcement_type == "allow":
        return "passed", f"enforced in allow mode ({len(set(map(aaguid_key, kr.aaguids)))} AAGUIDs)"
    if not kr.enforced:
        return "failed", "key restrictions are not enforced"
    return "failed", f"key restrictions are enforced in {kr.enforcement_type} mode"


@_check("PG-FIDO2-006", "The required AAGUIDs are allowed",
        "Microsoft Authenticator (Android and iOS) and the AAGUIDs the document keeps must be able to sign in.",
        "Add the missing AAGUIDs to the Passkey (FIDO2) key restrictions; or run Passkey Guard's apply.")
def required_aaguids(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when every Authenticator AAGUID and every AAGUID the document keeps is allowed."""
    if ctx.fido2 is None:
        return _no_fido2(ctx)
    spec = ctx.desired.passkey_method.key_restrictions
    required = list(AUTHENTICATOR_AAGUIDS)
    if spec.enforcement_type == "allow":
        required += [a for a in spec.aaguids if a not in required]
    summary = method_summary(ctx.fido2)
    missing = [a for a in required if not aaguid_allowed(summary, a, ignore_state=True)]
    if missing:
        return "failed", "not allowed: " + _labels(missing, ctx)
    return "passed", f"all {len(required)} required AAGUIDs are allowed"


@_check("PG-FIDO2-007", "No AAGUID allowed at the last run has disappeared",
        "Removing an AAGUID stops everyone who registered such a passkey from signing in with it; only the "
        "document's remove list may do that.",
        "Put the AAGUID back on the allow list, or list it under keyRestrictions.remove if dropping it was "
        "intended (and accept the lockout).")
def nothing_vanished(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when every AAGUID allowed at the previous run is still allowed or explicitly removed."""
    if ctx.last_allowed_aaguids is None:
        return "skipped", "no allow list recorded from a previous run"
    if ctx.fido2 is None:
        return _no_fido2(ctx)
    summary = method_summary(ctx.fido2)
    removed = {aaguid_key(a) for a in ctx.desired.passkey_method.key_restrictions.remove}
    gone = [a for a in ctx.last_allowed_aaguids if not aaguid_allowed(summary, a, ignore_state=True)]
    unexpected = [a for a in gone if aaguid_key(a) not in removed]
    if unexpected:
        return "failed", "no longer allowed: " + _labels(unexpected, ctx)
    if gone:
        return "passed", "only explicitly removed AAGUIDs disappeared: " + _labels(gone, ctx)
    return "passed", f"all {len(ctx.last_allowed_aaguids)} AAGUIDs from the last run are still allowed"


@_check("PG-AUTHSTR-001", "The authentication strength exists and accepts exactly the approved passkeys",
        "Conditional Access can only require approved passkeys through a custom strength restricted to "
        "their AAGUIDs.",
        "Protection > Authentication methods > Authentication strengths: create or edit the strength with "
        "Passkeys (FIDO2) only, Advanced options: the document's AAGUIDs; or run Passkey Guard's apply.")
def strength_matches(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when the strength is custom, allows only fido2, and its FIDO2 AAGUIDs equal the document's."""
    s = ctx.strength
    if s is None:
        return "failed", str(ctx.strength_problem)
    if s.is_builtin:
        return "failed", f"{s.display_name!r} is a built-in strength"
    problems = []
    if list(s.allowed_combinations) != ["fido2"]:
        problems.append("allowed combinations are " + (", ".join(s.allowed_combinations) or "none")
                        + " instead of fido2 only")
    want = ctx.desired.authentication_strength.allowed_aaguids
    have = s.allowed_aaguids
    if have is None:
        problems.append("no FIDO2 combination configuration: any passkey satisfies it")
    else:
        missing = [a for a in want if aaguid_key(a) not in {aaguid_key(h) for h in have}]
        extra = [h for h in have if aaguid_key(h) not in {aaguid_key(a) for a in want}]
        if missing:
            problems.append("missing AAGUIDs: " + _labels(missing, ctx))
        if extra:
            problems.append("unexpected AAGUIDs: " + _labels(extra, ctx))
    if problems:
        return "failed", "; ".join(problems)
    return "passed", f"{s.display_name!r} accepts passkeys from {len(want)} approved AAGUIDs only"


@_check("PG-CA-001", "The Conditional Access policy requires the strength",
        "Without the grant control, the strength is not required anywhere.",
        "Edit the CA policy: Grant > Require authentication strength = the document's strength, and no other "
        "grant control.")
def ca_requires_strength(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when our CA policy's grant is our strength alone (operator OR, no built-in controls)."""
    if ctx.desired.conditional_access is None:
        return "skipped", "the document does not manage Conditional Access"
    if ctx.ca is None:
        return "failed", str(ctx.ca_problem)
    if ctx.strength is None:
        return "failed", f"the strength it should require is missing ({ctx.strength_problem})"
    problems = []
    if (ctx.ca.strength_id or "").lower() != ctx.strength.id.lower():
        problems.append(f"requires strength {ctx.ca.strength_id or '(none)'} instead of "
                        f"{ctx.strength.id} ({ctx.strength.display_name!r})")
    if ctx.ca.built_in_controls:
        problems.append("also grants with built-in controls: " + ", ".join(ctx.ca.built_in_controls))
    if ctx.ca.grant_operator != "OR":
        problems.append(f"grant operator {ctx.ca.grant_operator or '(none)'} instead of OR")
    if problems:
        return "failed", "; ".join(problems)
    return "passed", f"requires {ctx.strength.display_name!r} and nothing else"


@_check("PG-CA-002", "The Conditional Access policy is in the decided state",
        "Report-only lets you measure impact before enforcing; the document says which state is wanted.",
        "Set the CA policy's state as in the document (enabled, disabled or report-only).")
def ca_state(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when the CA policy's state equals the document's."""
    spec = ctx.desired.conditional_access
    if spec is None:
        return "skipped", "the document does not manage Conditional Access"
    if ctx.ca is None:
        return "failed", str(ctx.ca_problem)
    if ctx.ca.state == spec.state:
        return "passed", f"state is {spec.state}"
    return "failed", f"state is {ctx.ca.state} instead of {spec.state}"


@_check("PG-CA-003", "The Conditional Access policy excludes emergency-access accounts",
        "A policy that applies to every account can lock out the administrators who would fix it.",
        "Exclude the emergency-access (break-glass) accounts or their group from the CA policy.")
def ca_emergency_access(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when the CA policy excludes at least one user or group."""
    if ctx.desired.conditional_access is None:
        return "skipped", "the document does not manage Conditional Access"
    if ctx.ca is None:
        return "failed", str(ctx.ca_problem)
    count = len(ctx.ca.exclude_users) + len(ctx.ca.exclude_groups)
    if count:
        return "passed", f"{count} user(s)/group(s) excluded"
    return "failed", "no user or group is excluded"


@_check("PG-CA-004", "The Conditional Access policy applies to the decided users, groups and applications",
        "A widened policy can lock out people the organisation did not mean to cover; a narrowed one leaves "
        "people without the passkey requirement.",
        "Set the CA policy's Users (include and exclude) and Target resources as in the document; or run "
        "Passkey Guard's apply.")
def ca_scope(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when included and excluded users and groups, and included applications, equal the document's."""
    spec = ctx.desired.conditional_access
    if spec is None:
        return "skipped", "the document does not manage Conditional Access"
    if ctx.ca is None:
        return "failed", str(ctx.ca_problem)
    pairs = (("includeUsers", ctx.ca.include_users, spec.include_users),
             ("includeGroups", ctx.ca.include_groups, spec.include_groups),
             ("excludeUsers", ctx.ca.exclude_users, spec.exclude_users),
             ("excludeGroups", ctx.ca.exclude_groups, spec.exclude_groups),
             ("includeApplications", ctx.ca.include_applications, spec.include_applications))
    problems = [problem for name, have, want in pairs for problem in _differences(name, have, want)]
    if problems:
        return "failed", "; ".join(problems)
    return "passed", "users, groups and applications are as decided"


@_check("PG-DOC-001", "The tenant matches every setting the document decides",
        "The document is the decision; any field that differs is drift that the next apply would change.",
        "Run `python -m shared plan` to see each difference, then apply it (or change the document).")
def document_matches(ctx: CheckContext) -> tuple[Status, str]:
    """Passes when the plan's diff (`plan.drift`) finds no field to change."""
    if ctx.drift is None or ctx.fido2 is None:
        return _no_fido2(ctx)
    if ctx.drift:
        fields = [f"{row.area} {row.field}" for row in ctx.drift]
        return "failed", f"{len(fields)} field(s) differ from the document: " + "; ".join(fields)
    return "passed", "no field differs from the document"


def run_checks(context: CheckContext, checks: Sequence[Check] | None = None) -> Report:
    """Run every check (or `checks`) against `context`. A check that raises is reported as failed."""
    chosen = tuple(CHECKS if checks is None else checks)
    results = []
    for c in chosen:
        try:
            results.append(c.fn(context))
        except Exception:
            log.exception("check %s raised", c.id)
            results.append(CheckResult(c.id, "failed", "the check could not be evaluated (internal error)"))
    return Report(tuple(results), chosen)
