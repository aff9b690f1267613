"""The desired-state document: what the organisation decided about the Passkey (FIDO2) method.

A JSON file (default `policy/desired-state.json`) whose shape and rules are the pydantic models of
`shared.schemas.document` (the one source of truth; `desired-state.schema.json` beside this module is
generated from them by `make schemas`). Here: the frozen dataclasses the plan reads, the validation that
turns a parsed document into them (AAGUIDs and ids lowercase, defaults filled), its normalised JSON and hash.
pydantic is imported only when a document is validated, never when this module is imported.

Every problem is collected, not just the first, and reported as `shared.errors.InputError` whose
`detail` is a list of `{"field": "passkeyMethod.keyRestrictions.aaguids[2]", "problem": "not a GUID"}`.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.errors import InputError
from shared.policy.aaguids import AUTHENTICATOR_AAGUIDS

ALL_USERS = "all_users"
CA_ALL = "All"
CA_APP_KEYWORDS: tuple[str, ...] = ("All", "Office365", "MicrosoftAdminPortals")
METHOD_STATES: tuple[str, ...] = ("enabled", "disabled")
ENFORCEMENT_TYPES: tuple[str, ...] = ("allow", "block")
CA_STATES: tuple[str, ...] = ("enabled", "disabled", "enabledForReportingButNotEnforced")
DEFAULT_CA_STATE = "enabledForReportingButNotEnforced"
ROOT_FIELD = "(document)"


# --- the model -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """An include/exclude target of the method: `all_users` or a security group's object id."""

    id: str
    display_name: str | None = None

    @property
    def is_all_users(self) -> bool:
        """True for the `all_users` keyword (never looked up as a group)."""
        return self.id == ALL_USERS


@dataclass(frozen=True)
class KeyRestrictionsSpec:
    """Key restrictions as decided: mode, the AAGUIDs to keep, and the only AAGUIDs that may be dropped."""

    enforced: bool = True
    enforcement_type: str = "allow"
    aaguids: tuple[str, ...] = AUTHENTICATOR_AAGUIDS
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class PasskeyMethodSpec:
    """The Passkey (FIDO2) method policy as decided."""

    include_targets: tuple[Target, ...]
    exclude_targets: tuple[Target, ...] = ()
    state: str = "enabled"
    self_service_registration: bool = True
    attestation_enforced: bool = False
    key_restrictions: KeyRestrictionsSpec = field(default_factory=KeyRestrictionsSpec)
    passkey_profile: str | None = None


@dataclass(frozen=True)
class StrengthSpec:
    """The custom authentication strength: passkeys (FIDO2) restricted to `allowed_aaguids`.

    `description` None means "not managed" (left as it is in the tenant).
    """

    display_name: str
    description: str | None = None
    allowed_aaguids: tuple[str, ...] = AUTHENTICATOR_AAGUIDS


@dataclass(frozen=True)
class ConditionalAccessSpec:
    """The Conditional Access policy that requires the strength for the sensitive resources."""

    display_name: str
    include_applications: tuple[str, ...]
    state: str = DEFAULT_CA_STATE
    include_users: tuple[str, ...] = ()
    include_groups: tuple[str, ...] = ()
    exclude_users: tuple[str, ...] = ()
    exclude_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class DesiredState:
    """A validated, normalised desired-state document (AAGUIDs and ids lowercase, defaults filled)."""

    passkey_method: PasskeyMethodSpec
    authentication_strength: StrengthSpec
    aaguid_names: Mapping[str, str] = field(default_factory=dict)
    conditional_access: ConditionalAccessSpec | None = None

    def group_ids(self) -> list[str]:
        """Every group id the document references (targets and CA groups), lowercase, first-seen order.

        The caller looks these up (`GET /groups/{id}`) and hands the results to `build_plan`.
        """
        ids: list[str] = []
        for t in (*self.passkey_method.include_targets, *self.passkey_method.exclude_targets):
            if not t.is_all_users and t.id not in ids:
                ids.append(t.id)
        if self.conditional_access is not None:
            for gid in (*self.conditional_access.include_groups, *self.conditional_access.exclude_groups):
                if gid not in ids:
                    ids.append(gid)
        return ids


# --- validation ------------------------------------------------------------------------------------
def validate_document(doc: object) -> DesiredState:
    """Validate a parsed desired-state document and return it normalised.

    The models in `shared.schemas.document` decide; raises `InputError` (detail: every `{field, problem}`
    found) when anything is wrong, so an administrator fixes the whole file in one go.
    """
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): it could be neither hashed nor stored
        raise InputError("desired-state document has text that is not valid Unicode (a lone surrogate)",
                         detail=[{"field": ROOT_FIELD, "problem": "text that is not valid Unicode"}]) from None
    except (TypeError, ValueError, RecursionError):
        pass  # not JSON data at all: the models name what is wrong
    from pydantic import ValidationError

    from shared.schemas.document import DesiredStateDocument
    from shared.schemas.problems import problems_of

    try:
        model = DesiredStateDocument.model_validate(doc)
    except ValidationError as exc:
        items = problems_of(exc)
        count = len(items)
        first = items[0]
        raise InputError(
            f"desired-state document has {count} problem{'s' if count != 1 else ''}; first: "
            f"{first['field']}: {first['problem']}",
            detail=items,
        ) from None
    return _desired_state(model)


def _targets(items: Sequence[Any]) -> tuple[Target, ...]:
    return tuple(Target(item, None) if isinstance(item, str) else Target(item.id, item.displayName)
                 for item in items)


def _desired_state(model: Any) -> DesiredState:
    """The frozen dataclasses the plan reads, from a validated `DesiredStateDocument`."""
    m = model.passkeyMethod
    kr = m.keyRestrictions
    method = PasskeyMethodSpec(
        include_targets=_targets(m.includeTargets), exclude_targets=_targets(m.excludeTargets), state=m.state,
        self_service_registration=m.selfServiceRegistration, attestation_enforced=m.attestationEnforced,
        key_restrictions=KeyRestrictionsSpec(kr.enforced, kr.enforcementType, tuple(kr.aaguids), tuple(kr.remove)),
        passkey_profile=m.passkeyProfile)
    s = model.authenticationStrength
    strength = StrengthSpec(s.displayName, s.description, tuple(s.allowedAaguids))
    ca = None
    if model.conditionalAccess is not None:
        c = model.conditionalAccess
        ca = ConditionalAccessSpec(c.displayName, tuple(c.includeApplications), c.state, tuple(c.includeUsers),
                                   tuple(c.includeGroups), tuple(c.excludeUsers), tuple(c.excludeGroups))
    return DesiredState(method, strength, dict(model.aaguidNames), ca)


def parse_document(text: str | bytes) -> DesiredState:
    """Parse JSON text (the file's content) and validate it; bad JSON is an `InputError` too."""
    from shared.web import parse_json

    try:
        doc = parse_json(text, what=ROOT_FIELD, limit=None)
    except InputError as exc:
        raise InputError("desired-state document is not valid JSON", detail=exc.detail) from None
    return validate_document(doc)


def desired_to_json(desired: DesiredState) -> dict[str, Any]:
    """The normalised document as JSON (defaults filled in, AAGUIDs lowercase).

    It validates again to the same `DesiredState`; plans store its hash to say what they were made from.
    """
    method = desired.passkey_method
    kr = method.key_restrictions

    def target(t: Target) -> object:
        return {"id": t.id, "displayName": t.display_name} if t.display_name is not None else t.id

    passkey: dict[str, Any] = {
        "state": method.state,
        "includeTargets": [target(t) for t in method.include_targets],
        "excludeTargets": [target(t) for t in method.exclude_targets],
        "selfServiceRegistration": method.self_service_registration,
        "attestationEnforced": method.attestation_enforced,
        "keyRestrictions": {"enforced": kr.enforced, "enforcementType": kr.enforcement_type,
                            "aaguids": list(kr.aaguids), "remove": list(kr.remove)},
    }
    if method.passkey_profile is not None:
        passkey["passkeyProfile"] = method.passkey_profile
    strength: dict[str, Any] = {"displayName": desired.authentication_strength.display_name,
                                "allowedAaguids": list(desired.authentication_strength.allowed_aaguids)}
    if desired.authentication_strength.description is not None:
        strength["description"] = desired.authentication_strength.description
    out: dict[str, Any] = {"passkeyMethod": passkey, "aaguidNames": dict(desired.aaguid_names),
                           "authenticationStrength": strength}
    ca = desired.conditional_access
    if ca is not None:
        out["conditionalAccess"] = {
            "displayName": ca.display_name, "state": ca.state, "includeUsers": list(ca.include_users),
            "includeGroups": list(ca.include_groups), "excludeUsers": list(ca.exclude_users),
            "excludeGroups": list(ca.exclude_groups), "includeApplications": list(ca.include_applications),
        }
    return out


def desired_hash(desired: DesiredState) -> str:
    """A stable sha256 of the normalised document (what a stored plan was made from)."""
    return canonical_sha256(desired_to_json(desired))


def canonical_sha256(value: object, *, default: Callable[[Any], Any] | None = None) -> str:
    """sha256 over canonical JSON (sorted keys, no spaces, UTF-8): equal data, equal hash."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
