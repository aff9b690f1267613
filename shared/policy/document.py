"""The desired-state document: what the organisation decided about the Passkey (FIDO2) method.

A JSON file (default `policy/desired-state.json`, schema `desired-state.schema.json` beside this module)
validated here by hand so the deployed app does not need the `jsonschema` package. The validator is at
least as strict as the schema (tests hold both to the same good and bad documents) and adds the rules a
schema cannot say: AAGUIDs and ids are compared case-insensitively, so `ABC…` and `abc…` are duplicates,
and an AAGUID may not be both kept (`aaguids`) and removed (`remove`).

Every problem is collected, not just the first, and reported as `shared.errors.InputError` whose
`detail` is a list of `{"field": "passkeyMethod.keyRestrictions.aaguids[2]", "problem": "not a GUID"}`.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.errors import InputError
from shared.policy.aaguids import AUTHENTICATOR_AAGUIDS, is_guid

ALL_USERS = "all_users"
CA_ALL = "All"
CA_APP_KEYWORDS: tuple[str, ...] = ("All", "Office365", "MicrosoftAdminPortals")
METHOD_STATES: tuple[str, ...] = ("enabled", "disabled")
ENFORCEMENT_TYPES: tuple[str, ...] = ("allow", "block")
CA_STATES: tuple[str, ...] = ("enabled", "disabled", "enabledForReportingButNotEnforced")
DEFAULT_CA_STATE = "enabledForReportingButNotEnforced"
ROOT_FIELD = "(document)"

_TOP_KEYS = ("$schema", "description", "passkeyMethod", "aaguidNames", "authenticationStrength",
             "conditionalAccess")
_METHOD_KEYS = ("state", "includeTargets", "excludeTargets", "selfServiceRegistration", "attestationEnforced",
                "keyRestrictions", "passkeyProfile")
_RESTRICTION_KEYS = ("enforced", "enforcementType", "aaguids", "remove")
_STRENGTH_KEYS = ("displayName", "description", "allowedAaguids")
_CA_KEYS = ("displayName", "state", "includeUsers", "includeGroups", "excludeUsers", "excludeGroups",
            "includeApplications")
_TARGET_KEYS = ("id", "displayName")
_NON_BLANK = re.compile(r"\S")


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
class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, path: str, problem: str) -> None:
        self.items.append({"field": path or ROOT_FIELD, "problem": problem})


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]" if path else f"[{key}]"
    return f"{path}.{key}" if path else key


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _object(value: object, path: str, allowed: Sequence[str], problems: _Problems,
            required: Sequence[str] = ()) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        problems.add(path, f"must be an object, got {_type_name(value)}")
        return None
    for key in value:
        if not isinstance(key, str) or key not in allowed:
            problems.add(_join(path, str(key)), "unknown field")
    for key in required:
        if key not in value:
            problems.add(_join(path, key), "required field missing")
    return value


def _bool(obj: dict[str, Any], key: str, path: str, problems: _Problems, default: bool) -> bool:
    if key not in obj:
        return default
    value = obj[key]
    if not isinstance(value, bool):
        problems.add(_join(path, key), f"must be true or false, got {_type_name(value)}")
        return default
    return value


def _enum(obj: dict[str, Any], key: str, path: str, problems: _Problems, allowed: Sequence[str],
          default: str) -> str:
    if key not in obj:
        return default
    value = obj[key]
    if not isinstance(value, str) or value not in allowed:
        problems.add(_join(path, key), "must be one of: " + ", ".join(allowed))
        return default
    return value


def _text(obj: dict[str, Any], key: str, path: str, problems: _Problems, *, blank_ok: bool = False) -> str | None:
    if key not in obj:
        return None
    value = obj[key]
    if not isinstance(value, str):
        problems.add(_join(path, key), f"must be a string, got {_type_name(value)}")
        return None
    if not blank_ok and not _NON_BLANK.search(value):
        problems.add(_join(path, key), "must not be empty")
        return None
    return value


def _id_list(obj: dict[str, Any], key: str, path: str, problems: _Problems, *,
             keywords: Sequence[str] = (), min_items: int = 0, what: str = "a GUID",
             default: Sequence[str] = ()) -> tuple[str, ...]:
    """A list of GUIDs (or keywords), lowercased, each problem named by index; duplicates rejected."""
    if key not in obj:
        return tuple(default)
    value = obj[key]
    here = _join(path, key)
    if not isinstance(value, list):
        problems.add(here, f"must be an array, got {_type_name(value)}")
        return tuple(default)
    if len(value) < min_items:
        problems.add(here, "must not be empty" if min_items == 1 else f"needs at least {min_items} entries")
    out: list[str] = []
    first_at: dict[str, int] = {}
    for i, item in enumerate(value):
        item_path = _join(here, i)
        if isinstance(item, str) and item in keywords:
            norm = item
        elif is_guid(item):
            norm = str(item).lower()
        else:
            problems.add(item_path, f"not {what}")
            continue
        if norm.lower() in first_at:
            problems.add(item_path, f"duplicate of {key}[{first_at[norm.lower()]}]")
            continue
        first_at[norm.lower()] = i
        out.append(norm)
    return tuple(out)


def _targets(obj: dict[str, Any], key: str, path: str, problems: _Problems, *, allow_all_users: bool,
             required: bool) -> tuple[Target, ...]:
    here = _join(path, key)
    if key not in obj:
        return ()
    value = obj[key]
    if not isinstance(value, list):
        problems.add(here, f"must be an array, got {_type_name(value)}")
        return ()
    if required and not value:
        problems.add(here, "must not be empty")
    what = '"all_users" or a group id (GUID)' if allow_all_users else "a group id (GUID)"
    out: list[Target] = []
    first_at: dict[str, int] = {}
    for i, item in enumerate(value):
        item_path = _join(here, i)
        raw_id: object
        name: str | None = None
        if isinstance(item, dict):
            entry = _object(item, item_path, _TARGET_KEYS, problems, required=("id",))
            if entry is None or "id" not in entry:
                continue
            raw_id = entry["id"]
            name = _text(entry, "displayName", item_path, problems)
            id_path = _join(item_path, "id")
        else:
            raw_id = item
            id_path = item_path
        if allow_all_users and raw_id == ALL_USERS:
            tid = ALL_USERS
        elif is_guid(raw_id):
            tid = str(raw_id).lower()
        else:
            problems.add(id_path, f"not {what}")
            continue
        if tid in first_at:
            problems.add(item_path, f"duplicate of {key}[{first_at[tid]}]")
            continue
        first_at[tid] = i
        out.append(Target(tid, name))
    if allow_all_users and len(value) > 1 and any(t.is_all_users for t in out):
        problems.add(here, '"all_users" cannot be combined with other targets')
    return tuple(out)


def _key_restrictions(value: object, path: str, problems: _Problems) -> KeyRestrictionsSpec:
    obj = _object(value, path, _RESTRICTION_KEYS, problems)
    if obj is None:
        return KeyRestrictionsSpec()
    enforced = _bool(obj, "enforced", path, problems, True)
    mode = _enum(obj, "enforcementType", path, problems, ENFORCEMENT_TYPES, "allow")
    aaguids = _id_list(obj, "aaguids", path, problems, default=AUTHENTICATOR_AAGUIDS)
    remove = _id_list(obj, "remove", path, problems)
    kept = set(aaguids)
    for i, item in enumerate(obj.get("remove", []) if isinstance(obj.get("remove"), list) else []):
        if is_guid(item) and str(item).lower() in kept:
            problems.add(_join(_join(path, "remove"), i), "also listed in aaguids: keep it or remove it, not both")
    # Only judged when the fields themselves are valid, as the schema's if/then does.
    enforced_ok = "enforced" not in obj or obj["enforced"] is True
    allow_ok = "enforcementType" not in obj or obj["enforcementType"] == "allow"
    if enforced_ok and allow_ok:
        raw_keep = obj.get("aaguids")
        if isinstance(raw_keep, list):
            present = {str(x).lower() for x in raw_keep if isinstance(x, str)}
            for required in AUTHENTICATOR_AAGUIDS:
                if required not in present:
                    problems.add(_join(path, "aaguids"),
                                 f"must include the Microsoft Authenticator AAGUID {required} when key restrictions "
                                 "are enforced in allow mode")
        raw_remove = obj.get("remove")
        if isinstance(raw_remove, list):
            for i, item in enumerate(raw_remove):
                if isinstance(item, str) and item.lower() in AUTHENTICATOR_AAGUIDS:
                    problems.add(_join(_join(path, "remove"), i),
                                 "cannot remove a Microsoft Authenticator AAGUID while enforcing an allow list")
    return KeyRestrictionsSpec(enforced, mode, aaguids, remove)


def _passkey_method(value: object, problems: _Problems) -> PasskeyMethodSpec:
    path = "passkeyMethod"
    obj = _object(value, path, _METHOD_KEYS, problems, required=("includeTargets",))
    if obj is None:
        return PasskeyMethodSpec(include_targets=(Target(ALL_USERS),))
    state = _enum(obj, "state", path, problems, METHOD_STATES, "enabled")
    include = _targets(obj, "includeTargets", path, problems, allow_all_users=True, required=True)
    exclude = _targets(obj, "excludeTargets", path, problems, allow_all_users=False, required=False)
    self_service = _bool(obj, "selfServiceRegistration", path, problems, True)
    attestation = _bool(obj, "attestationEnforced", path, problems, False)
    restrictions = (_key_restrictions(obj["keyRestrictions"], _join(path, "keyRestrictions"), problems)
                    if "keyRestrictions" in obj else KeyRestrictionsSpec())
    profile = _text(obj, "passkeyProfile", path, problems)
    return PasskeyMethodSpec(include, exclude, state, self_service, attestation, restrictions, profile)


def _aaguid_names(value: object, problems: _Problems) -> dict[str, str]:
    path = "aaguidNames"
    if not isinstance(value, dict):
        problems.add(path, f"must be an object, got {_type_name(value)}")
        return {}
    out: dict[str, str] = {}
    for key, name in value.items():
        here = _join(path, str(key))
        if not is_guid(key):
            problems.add(here, "key is not a GUID")
            continue
        if not isinstance(name, str) or not name.strip():
            problems.add(here, "must be a non-empty string")
            continue
        norm = str(key).lower()
        if norm in out:
            problems.add(here, "duplicate AAGUID (names are matched case-insensitively)")
            continue
        out[norm] = name
    return out


def _strength(value: object, problems: _Problems) -> StrengthSpec:
    path = "authenticationStrength"
    obj = _object(value, path, _STRENGTH_KEYS, problems, required=("displayName",))
    if obj is None:
        return StrengthSpec("")
    name = _text(obj, "displayName", path, problems) or ""
    description = _text(obj, "description", path, problems, blank_ok=True)
    allowed = _id_list(obj, "allowedAaguids", path, problems, min_items=1, default=AUTHENTICATOR_AAGUIDS)
    return StrengthSpec(name, description, allowed)


def _conditional_access(value: object, problems: _Problems) -> ConditionalAccessSpec:
    path = "conditionalAccess"
    obj = _object(value, path, _CA_KEYS, problems, required=("displayName", "includeApplications"))
    if obj is None:
        return ConditionalAccessSpec("", ())
    name = _text(obj, "displayName", path, problems) or ""
    state = _enum(obj, "state", path, problems, CA_STATES, DEFAULT_CA_STATE)
    include_users = _id_list(obj, "includeUsers", path, problems, keywords=(CA_ALL,),
                             what='"All" or a user id (GUID)')
    include_groups = _id_list(obj, "includeGroups", path, problems, what="a group id (GUID)")
    exclude_users = _id_list(obj, "excludeUsers", path, problems, what="a user id (GUID)")
    exclude_groups = _id_list(obj, "excludeGroups", path, problems, what="a group id (GUID)")
    apps = _id_list(obj, "includeApplications", path, problems, keywords=CA_APP_KEYWORDS, min_items=1,
                    what="an application id (GUID) or one of " + ", ".join(CA_APP_KEYWORDS))

    def non_empty_list(key: str) -> bool:
        return isinstance(obj.get(key), list) and len(obj[key]) > 0

    if not (non_empty_list("includeUsers") or non_empty_list("includeGroups")):
        problems.add(path, "needs at least one entry in includeUsers or includeGroups")
    return ConditionalAccessSpec(name, apps, state, include_users, include_groups, exclude_users, exclude_groups)


def validate_document(doc: object) -> DesiredState:
    """Validate a parsed desired-state document and return it normalised.

    Raises `InputError` (detail: every `{field, problem}` found) when anything is wrong, so an
    administrator fixes the whole file in one go.
    """
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): it could be neither hashed nor stored
        raise InputError("desired-state document has text that is not valid Unicode (a lone surrogate)",
                         detail=[{"field": ROOT_FIELD, "problem": "text that is not valid Unicode"}]) from None
    except (TypeError, ValueError, RecursionError):
        pass  # not JSON data at all: the checks below name what is wrong
    problems = _Problems()
    top = _object(doc, "", _TOP_KEYS, problems, required=("passkeyMethod", "authenticationStrength"))
    method: PasskeyMethodSpec | None = None
    strength: StrengthSpec | None = None
    names: dict[str, str] = {}
    ca: ConditionalAccessSpec | None = None
    if top is not None:
        for key in ("$schema", "description"):
            if key in top and not isinstance(top[key], str):
                problems.add(key, f"must be a string, got {_type_name(top[key])}")
        if "passkeyMethod" in top:
            method = _passkey_method(top["passkeyMethod"], problems)
        if "aaguidNames" in top:
            names = _aaguid_names(top["aaguidNames"], problems)
        if "authenticationStrength" in top:
            strength = _strength(top["authenticationStrength"], problems)
        if "conditionalAccess" in top:
            ca = _conditional_access(top["conditionalAccess"], problems)
    if problems.items:
        count = len(problems.items)
        first = problems.items[0]
        raise InputError(
            f"desired-state document has {count} problem{'s' if count != 1 else ''}; first: "
            f"{first['field']}: {first['problem']}",
            detail=problems.items,
        )
    assert method is not None and strength is not None  # guaranteed by the required-field checks
    return DesiredState(method, strength, names, ca)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_document(text: str | bytes) -> DesiredState:
    """Parse JSON text (the file's content) and validate it; bad JSON is an `InputError` too."""
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        where = ""
        if isinstance(exc, json.JSONDecodeError):
            where = f" at line {exc.lineno} column {exc.colno}"
        raise InputError("desired-state document is not valid JSON",
                         detail=[{"field": ROOT_FIELD, "problem": f"not valid JSON{where}"}]) from None
    except RecursionError:
        raise InputError("desired-state document is not valid JSON",
                         detail=[{"field": ROOT_FIELD, "problem": "nested too deeply"}]) from None
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
