"""The tenant's current state, read from raw Graph JSON into normalised views (no I/O).

The FIDO2 method configuration comes in two shapes (graph-contract.md): the deprecated *legacy* one with
top-level `keyRestrictions` / `isAttestationEnforced`, and the *profiles* one where AAGUID enforcement
lives in `passkeyProfiles[].keyRestrictions`. `read_fido2` hides the difference: it reports the effective
settings of the one profile the document manages (or the legacy top level), and keeps the raw JSON so a
write can send back everything it does not change exactly as read (`passkeyTypes` stays the raw comma
string: the SDK's enum would lose `"deviceBound,synced"`).

Strengths and Conditional Access policies are read from raw list JSON (a list, or `{"value": [...]}`)
and found by display name: exact match first, case-insensitive match second.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shared.errors import InputError
from shared.policy.aaguids import aaguid_key, dedupe_aaguids

FIDO2_ODATA_TYPE = "#microsoft.graph.fido2AuthenticationMethodConfiguration"
COMBINATION_ODATA_TYPE = "#microsoft.graph.fido2CombinationConfiguration"
MODE_LEGACY = "legacy"
MODE_PROFILES = "profiles"
ATTESTATION_ON = "registrationOnly"
ATTESTATION_OFF = "disabled"


def as_list(raw: object) -> list[dict[str, Any]]:
    """The items of a Graph collection given as a list or as `{"value": [...]}`; non-objects skipped."""
    if isinstance(raw, Mapping):
        raw = raw.get("value", [])
    if not isinstance(raw, list):
        return []
    return [item for item in raw if isinstance(item, dict)]


def _str_list(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def is_volatile_key(key: str) -> bool:
    """OData annotations other than `@odata.type` (`@odata.context`, `x@odata.context`, `@odata.etag`…).

    They describe the response, not the object: never sent back, never part of a state hash.
    """
    return "@odata." in key and key != "@odata.type"


def strip_volatile(value: Any) -> Any:
    """A deep copy of `value` without volatile OData annotations at any depth."""
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items() if not is_volatile_key(k)}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return copy.deepcopy(value)


# --- FIDO2 method configuration ----------------------------------------------------------------------
@dataclass(frozen=True)
class KeyRestrictionsView:
    """Effective key restrictions: `aaguids` exactly as read (strings only, order kept)."""

    enforced: bool
    enforcement_type: str
    aaguids: tuple[str, ...]

    @classmethod
    def from_raw(cls, raw: object) -> KeyRestrictionsView:
        """Read a raw `keyRestrictions` object; missing or null means "not enforced, allow, empty"."""
        kr = _dict(raw)
        enforced = kr.get("isEnforced") is True
        mode = kr.get("enforcementType") if kr.get("enforcementType") in ("allow", "block") else "allow"
        return cls(enforced, str(mode), tuple(_str_list(kr.get("aaGuids"))))

    def summary(self) -> dict[str, Any]:
        """Plain-data form used by plans: `{isEnforced, enforcementType, aaGuids}`."""
        return {"isEnforced": self.enforced, "enforcementType": self.enforcement_type,
                "aaGuids": dedupe_aaguids(self.aaguids)}


@dataclass(frozen=True)
class Fido2View:
    """The effective Passkey (FIDO2) settings the document manages, plus the raw JSON they came from.

    In `profiles` mode the per-profile settings (attestation, key restrictions) are the managed profile's;
    `state`, self-service and targets are always method-wide.
    """

    mode: str
    state: str
    self_service_registration: bool
    attestation_enforced: bool
    key_restrictions: KeyRestrictionsView
    include_targets: tuple[dict[str, Any], ...]
    exclude_targets: tuple[dict[str, Any], ...]
    profile_index: int | None
    profile_id: str | None
    profile_name: str | None
    raw: dict[str, Any]

    @property
    def include_ids(self) -> list[str]:
        """Include target ids, lowercase (`all_users` stays as is)."""
        return [str(t.get("id", "")).lower() for t in self.include_targets]

    @property
    def exclude_ids(self) -> list[str]:
        """Exclude target ids, lowercase."""
        return [str(t.get("id", "")).lower() for t in self.exclude_targets]

    @property
    def attestation_field(self) -> str:
        """The Graph field that holds attestation for this view (for diff rows)."""
        if self.mode == MODE_PROFILES:
            return f"passkeyProfiles[{self.profile_name or self.profile_id}].attestationEnforcement"
        return "isAttestationEnforced"

    @property
    def restrictions_field(self) -> str:
        """The Graph field that holds key restrictions for this view (for diff rows)."""
        if self.mode == MODE_PROFILES:
            return f"passkeyProfiles[{self.profile_name or self.profile_id}].keyRestrictions"
        return "keyRestrictions"


def fido2_mode(raw: Mapping[str, Any]) -> str:
    """`profiles` when `passkeyProfiles` is a non-empty list, else `legacy`."""
    profiles = raw.get("passkeyProfiles")
    return MODE_PROFILES if isinstance(profiles, list) and any(isinstance(p, dict) for p in profiles) else MODE_LEGACY


def find_profile(raw: Mapping[str, Any], profile_ref: str | None) -> tuple[int, dict[str, Any]]:
    """The index and raw JSON of the managed passkey profile.

    `profile_ref` is a profile id or name (ids compared case-insensitively, names exactly first, then
    case-insensitively); None means the tenant's `defaultPasskeyProfile` (or the only profile there is).
    Raises `InputError` naming `passkeyMethod.passkeyProfile` when no single profile matches.
    """
    profiles = [(i, p) for i, p in enumerate(raw.get("passkeyProfiles") or []) if isinstance(p, dict)]
    names = ", ".join(repr(p.get("name")) for _, p in profiles) or "none"

    def fail(problem: str) -> InputError:
        return InputError(problem, detail=[{"field": "passkeyMethod.passkeyProfile", "problem": problem}])

    if profile_ref is None:
        default_id = raw.get("defaultPasskeyProfile")
        hits = [(i, p) for i, p in profiles
                if isinstance(default_id, str) and str(p.get("id", "")).lower() == default_id.lower()]
        if not hits and len(profiles) == 1:
            hits = profiles
        if len(hits) != 1:
            raise fail(f"cannot tell which passkey profile is the default (defaultPasskeyProfile={default_id!r}, "
                       f"profiles: {names}); name one in passkeyMethod.passkeyProfile")
        return hits[0]
    for match in (
        lambda p: str(p.get("id", "")).lower() == profile_ref.lower(),
        lambda p: p.get("name") == profile_ref,
        lambda p: isinstance(p.get("name"), str) and p["name"].casefold() == profile_ref.casefold(),
    ):
        hits = [(i, p) for i, p in profiles if match(p)]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise fail(f"passkey profile {profile_ref!r} is ambiguous ({len(hits)} profiles match)")
    raise fail(f"no passkey profile {profile_ref!r} in the tenant (profiles: {names})")


def read_fido2(raw: Mapping[str, Any], profile_ref: str | None = None) -> Fido2View:
    """Normalise the raw GET of `…/authenticationMethodConfigurations/fido2` into a `Fido2View`.

    Raises `InputError` only in profiles mode when the managed profile cannot be found (see `find_profile`).
    """
    data = strip_volatile(dict(raw))
    mode = fido2_mode(data)
    include = tuple(t for t in data.get("includeTargets") or [] if isinstance(t, dict))
    exclude = tuple(t for t in data.get("excludeTargets") or [] if isinstance(t, dict))
    state = data.get("state") if isinstance(data.get("state"), str) else "disabled"
    self_service = data.get("isSelfServiceRegistrationAllowed") is not False
    if mode == MODE_PROFILES:
        index, profile = find_profile(data, profile_ref)
        return Fido2View(
            mode=mode, state=str(state), self_service_registration=self_service,
            attestation_enforced=profile.get("attestationEnforcement") == ATTESTATION_ON,
            key_restrictions=KeyRestrictionsView.from_raw(profile.get("keyRestrictions")),
            include_targets=include, exclude_targets=exclude, profile_index=index,
            profile_id=str(profile["id"]) if profile.get("id") is not None else None,
            profile_name=str(profile["name"]) if profile.get("name") is not None else None,
            raw=data,
        )
    return Fido2View(
        mode=mode, state=str(state), self_service_registration=self_service,
        attestation_enforced=data.get("isAttestationEnforced") is True,
        key_restrictions=KeyRestrictionsView.from_raw(data.get("keyRestrictions")),
        include_targets=include, exclude_targets=exclude, profile_index=None, profile_id=None,
        profile_name=None, raw=data,
    )


def method_summary(view: Fido2View) -> dict[str, Any]:
    """`{state, isEnforced, enforcementType, aaGuids}`: what decides whether a passkey works."""
    return {"state": view.state, **view.key_restrictions.summary()}


def aaguid_allowed(summary: Mapping[str, Any], aaguid: str, *, ignore_state: bool = False) -> bool:
    """Whether a passkey with `aaguid` may sign in under a `method_summary` (case-insensitive)."""
    if not ignore_state and summary.get("state") != "enabled":
        return False
    if not summary.get("isEnforced"):
        return True
    listed = aaguid_key(aaguid) in {aaguid_key(a) for a in summary.get("aaGuids") or []}
    return listed if summary.get("enforcementType") == "allow" else not listed


def effective_allowed_aaguids(view: Fido2View) -> list[str] | None:
    """The explicit allow list (lowercase) when restrictions are enforced in allow mode, else None.

    Store it after each run: the next run's check PG-FIDO2-007 compares against it.
    """
    kr = view.key_restrictions
    if kr.enforced and kr.enforcement_type == "allow":
        return dedupe_aaguids(kr.aaguids)
    return None


# --- authentication strengths -------------------------------------------------------------------------
def is_fido2_combination(config: Mapping[str, Any]) -> bool:
    """True for a fido2CombinationConfiguration (by `@odata.type`, else by its fields)."""
    odata = str(config.get("@odata.type", "")).lower()
    if odata:
        return odata.endswith("fido2combinationconfiguration")
    return "allowedAAGUIDs" in config and "fido2" in _str_list(config.get("appliesToCombinations"))


@dataclass(frozen=True)
class StrengthView:
    """One authentication strength policy as read, with its combination configurations (raw).

    `allowed_combinations` are the raw strings (`"password,sms"` stays one entry).
    """

    id: str
    display_name: str
    description: str | None
    policy_type: str | None
    allowed_combinations: tuple[str, ...]
    combination_configurations: tuple[dict[str, Any], ...]
    raw: dict[str, Any]

    @property
    def fido2_configurations(self) -> list[dict[str, Any]]:
        """The FIDO2 combination configurations (normally zero or one)."""
        return [c for c in self.combination_configurations if is_fido2_combination(c)]

    @property
    def allowed_aaguids(self) -> list[str] | None:
        """AAGUIDs of the first FIDO2 configuration (lowercase, deduplicated); None = any FIDO2 key."""
        configs = self.fido2_configurations
        if not configs:
            return None
        return dedupe_aaguids(_str_list(configs[0].get("allowedAAGUIDs")))

    @property
    def is_builtin(self) -> bool:
        """Built-in strengths cannot be changed or given combination configurations."""
        return str(self.policy_type or "").lower() == "builtin"

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> StrengthView:
        """Read one raw strength; attach its configurations as `combinationConfigurations` (list or
        `{"value": [...]}`) before calling, as listed by `GET …/{id}/combinationConfigurations`."""
        data = strip_volatile(dict(raw))
        return cls(
            id=str(data.get("id", "")), display_name=str(data.get("displayName", "")),
            description=data.get("description") if isinstance(data.get("description"), str) else None,
            policy_type=data.get("policyType") if isinstance(data.get("policyType"), str) else None,
            allowed_combinations=tuple(_str_list(data.get("allowedCombinations"))),
            combination_configurations=tuple(as_list(data.get("combinationConfigurations"))),
            raw=data,
        )


def _named(items: Sequence[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    exact = [i for i in items if i.get("displayName") == name]
    if exact:
        return exact
    folded = name.casefold()
    return [i for i in items if isinstance(i.get("displayName"), str) and i["displayName"].casefold() == folded]


def strengths_named(strengths_raw: object, display_name: str) -> list[StrengthView]:
    """Every strength whose displayName matches (exact matches win over case-insensitive ones)."""
    return [StrengthView.from_raw(s) for s in _named(as_list(strengths_raw), display_name)]


# --- Conditional Access -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaPolicyView:
    """The parts of a Conditional Access policy we manage, plus its raw JSON."""

    id: str
    display_name: str
    state: str | None
    include_users: tuple[str, ...]
    include_groups: tuple[str, ...]
    exclude_users: tuple[str, ...]
    exclude_groups: tuple[str, ...]
    include_applications: tuple[str, ...]
    grant_operator: str | None
    strength_id: str | None
    built_in_controls: tuple[str, ...]
    raw: dict[str, Any]

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> CaPolicyView:
        """Read one raw policy; missing or null parts read as empty."""
        data = strip_volatile(dict(raw))
        conditions = _dict(data.get("conditions"))
        users = _dict(conditions.get("users"))
        apps = _dict(conditions.get("applications"))
        grant = _dict(data.get("grantControls"))
        strength = _dict(grant.get("authenticationStrength"))
        return cls(
            id=str(data.get("id", "")), display_name=str(data.get("displayName", "")),
            state=data.get("state") if isinstance(data.get("state"), str) else None,
            include_users=tuple(_str_list(users.get("includeUsers"))),
            include_groups=tuple(_str_list(users.get("includeGroups"))),
            exclude_users=tuple(_str_list(users.get("excludeUsers"))),
            exclude_groups=tuple(_str_list(users.get("excludeGroups"))),
            include_applications=tuple(_str_list(apps.get("includeApplications"))),
            grant_operator=grant.get("operator") if isinstance(grant.get("operator"), str) else None,
            strength_id=strength.get("id") if isinstance(strength.get("id"), str) else None,
            built_in_controls=tuple(_str_list(grant.get("builtInControls"))),
            raw=data,
        )


def ca_policies_named(ca_raw: object, display_name: str) -> list[CaPolicyView]:
    """Every CA policy whose displayName matches (exact matches win over case-insensitive ones)."""
    return [CaPolicyView.from_raw(p) for p in _named(as_list(ca_raw), display_name)]
