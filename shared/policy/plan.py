"""The plan: what would change to bring the tenant to the desired state, and what that would break.

`build_plan` is pure: it takes the desired state and the raw Graph JSON the caller read, and returns a
`Plan` whose `writes` are plain data the caller sends to Graph in order. Rules it keeps:

- **An AAGUID is only dropped when the document lists it under `keyRestrictions.remove`.** The new list is
  the tenant's list (when it is of the same kind, allow or block) plus the document's, minus `remove`,
  in a stable order: the tenant's order first, then new ones.
- **Writes are fresh bodies**, never the object that was read: `patch_fido2` carries `@odata.type` and only
  the properties that differ; collections are sent whole (Graph replaces them). In profiles mode the body
  sends the whole `passkeyProfiles` list, every other profile and every other field of the managed one
  exactly as read (raw `passkeyTypes` strings such as `"deviceBound,synced"` included), without
  volatile annotations such as `@odata.context`.
- **What shrinks is spelled out** (`narrowing`), and `lockout_impact` lists the registered passkeys that
  would stop working. A plan `requires_acceptance` when it would lock someone out or narrows something we
  cannot evaluate (targets, strength methods, an enforced CA policy).
- **An enforced CA policy must spare an emergency-access account.** When the plan writes a Conditional
  Access policy that ends `enabled` with no excluded user or group, its name goes to `unexcluded_ca` and
  the plan `requires_emergency_acceptance`: a separate, explicit acceptance of that plan.

Writes, in the order they must run, say what they do and to which object, never where it lives in Graph
(`shared/graph/policy_paths.py` turns a write into its request; `plan_to_json` shows people that method and
path beside each write):

    {"op": "patch_fido2", "target": "fido2", "body": {...}}
    {"op": "create_strength", "target": <displayName>, "body": {...}}
    {"op": "update_strength", "target": <displayName>, "strengthId": <id>, "body": {...}}
    {"op": "update_strength_combinations", "target": ..., "strengthId": <id>, "body": {"allowedCombinations": [...]}}
    {"op": "create_combination_configuration", "target": ..., "strengthId": <id>, "body": {...}}
    {"op": "update_combination_configuration", "target": ..., "strengthId": <id>, "configurationId": <cid>, ...}
    {"op": "create_ca_policy", "target": <displayName>, "body": {...}}
    {"op": "update_ca_policy", "target": <displayName>, "policyId": <id>, "body": {...}}

When the strength does not exist yet its id is unknown: ids and bodies then hold the placeholder
`STRENGTH_ID_PLACEHOLDER` (`{{strength.id}}`), and the applier, after running `create_strength`, calls
`fill_strength_id(writes, new_id)` on the remaining writes.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.errors import InputError
from shared.graph.policy_paths import write_request
from shared.policy.aaguids import (
    AUTHENTICATOR_AAGUIDS,
    aaguid_key,
    dedupe_aaguids,
    is_guid,
    label_of,
    name_of,
)
from shared.policy.current import (
    ATTESTATION_OFF,
    ATTESTATION_ON,
    COMBINATION_ODATA_TYPE,
    FIDO2_ODATA_TYPE,
    MODE_PROFILES,
    CaPolicyView,
    Fido2View,
    StrengthView,
    aaguid_allowed,
    ca_policies_named,
    fido2_mode,
    method_summary,
    read_fido2,
    strengths_named,
    strip_volatile,
)
from shared.policy.document import (
    ALL_USERS,
    ConditionalAccessSpec,
    DesiredState,
    StrengthSpec,
    canonical_sha256,
    desired_hash,
)

log = logging.getLogger(__name__)

#: More include targets than this and the portal's save may fail (seed: use one group instead).
MANY_TARGETS = 10
#: Stands for the id of a strength that `create_strength` has yet to create.
STRENGTH_ID_PLACEHOLDER = "{{strength.id}}"
PLAN_FORMAT_VERSION = 1

AREA_METHOD = "passkeyMethod"
AREA_STRENGTH = "authenticationStrength"
AREA_CA = "conditionalAccess"

WRITE_OPS: tuple[str, ...] = (
    "patch_fido2", "create_strength", "update_strength", "update_strength_combinations",
    "create_combination_configuration", "update_combination_configuration", "create_ca_policy",
    "update_ca_policy",
)


# --- plan data -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChangeRow:
    """One field that differs: where, what it is now, what it will be, and why it matters."""

    area: str
    field: str
    before: Any
    after: Any
    note: str = ""


@dataclass(frozen=True)
class Issue:
    """A warning or a blocking error: a stable `code` for machines, a `message` for people."""

    code: str
    message: str


@dataclass(frozen=True)
class Narrowing:
    """Something that shrinks what users can do. `evaluable` when `lockout_impact` can name who is hit."""

    kind: str
    detail: str
    aaguids: tuple[str, ...] = ()
    evaluable: bool = True


@dataclass(frozen=True)
class LockoutRow:
    """A registered passkey that would stop working (`scope` "method") or stop satisfying the strength
    (`scope` "strength") once the plan is applied."""

    user_id: str
    upn: str | None
    passkey_id: str | None
    aaguid: str
    name: str
    model: str | None
    scope: str = "method"


@dataclass
class Plan:
    """The outcome of `build_plan`. Store it with `plan_to_json`; re-check `state_hash` before applying."""

    mode: str
    state_hash: str
    desired_hash: str
    changes: list[ChangeRow] = field(default_factory=list)
    writes: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    errors: list[Issue] = field(default_factory=list)
    narrowing: list[Narrowing] = field(default_factory=list)
    lockout: list[LockoutRow] = field(default_factory=list)
    lockout_evaluated: bool = False
    aaguid_names: dict[str, str] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    method_before: dict[str, Any] | None = None
    method_after: dict[str, Any] | None = None
    strength_before: dict[str, Any] | None = None
    strength_after: dict[str, Any] | None = None
    unexcluded_ca: list[str] = field(default_factory=list)
    #: How people see ids in the changes (lower-cased id or placeholder -> "name (id)"); machines use the ids.
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """True when there is nothing to write."""
        return not self.writes

    @property
    def blocked(self) -> bool:
        """True when an error forbids applying the plan (fix the document or the tenant first)."""
        return bool(self.errors)

    @property
    def needs_lockout_evaluation(self) -> bool:
        """True when `lockout_impact` can say who a narrowing hits (worth reading users' passkeys)."""
        return any(n.evaluable for n in self.narrowing)

    @property
    def requires_acceptance(self) -> bool:
        """True when applying may lock people out: lockout rows, narrowing we cannot evaluate, or
        narrowing whose lockout impact has not been evaluated yet."""
        if self.lockout or any(not n.evaluable for n in self.narrowing):
            return True
        return self.needs_lockout_evaluation and not self.lockout_evaluated

    @property
    def requires_emergency_acceptance(self) -> bool:
        """True when the plan writes an enforced CA policy that excludes no emergency-access account."""
        return bool(self.unexcluded_ca)


# --- helpers ------------------------------------------------------------------------------------------
def _keys(values: Iterable[str]) -> set[str]:
    return {aaguid_key(v) for v in values}


def _labels(aaguids: Iterable[str], names: Mapping[str, str]) -> str:
    return ", ".join(label_of(a, names) for a in aaguids)


def merge_aaguids(current: Sequence[str], wanted: Sequence[str], remove: Sequence[str]) -> list[str]:
    """current + wanted - remove (as sets), case-insensitive, current order first, then new ones.

    Nothing in `current` is dropped unless it is in `remove`: that is the whole point.
    """
    gone = _keys(remove)
    return dedupe_aaguids([a for a in (*current, *wanted) if aaguid_key(a) not in gone])


def _write(op: str, target: str, body: dict[str, Any], **ids: str) -> dict[str, Any]:
    """A planned write: what it does, to which object (display name and ids), and the body to send."""
    return {"op": op, "target": target, **ids, "body": body}


def _same_set(a: Iterable[str], b: Iterable[str]) -> bool:
    return {x.lower() for x in a} == {x.lower() for x in b}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


# --- state hash ---------------------------------------------------------------------------------------
def state_hash(desired: DesiredState, fido2_raw: Mapping[str, Any], strengths_raw: object,
               ca_raw: object) -> str:
    """sha256 of the normalised starting state the plan depends on.

    Covers the FIDO2 configuration (minus volatile annotations), every strength named like ours with its
    combination configurations, and (when CA is managed) every CA policy named like ours. Compute it
    again just before applying a stored plan: a different hash means the tenant moved (409).
    """
    strengths = sorted((strip_volatile(s.raw) for s in
                        strengths_named(strengths_raw, desired.authentication_strength.display_name)),
                       key=lambda s: str(s.get("id", "")))
    ca: list[Any] | None = None
    if desired.conditional_access is not None:
        ca = sorted((strip_volatile(p.raw) for p in
                     ca_policies_named(ca_raw, desired.conditional_access.display_name)),
                    key=lambda p: str(p.get("id", "")))
    return canonical_sha256({"fido2": strip_volatile(dict(fido2_raw)), "strengths": strengths, "ca": ca})


def names_to_read(desired: DesiredState, ca_raw: object) -> tuple[list[str], list[str], list[str]]:
    """(users, applications, groups) whose names a plan shows: those the CA section names by id, and those
    the tenant's policy of that name covers today (`ca_raw`). Groups the document targets are left out
    (they are read anyway, for the target check); so is anything that is not a GUID (`All`, `None`…)."""
    ca = desired.conditional_access
    if ca is None:
        return [], [], []
    users, apps, groups = [*ca.include_users, *ca.exclude_users], [*ca.include_applications], []
    for policy in ca_policies_named(ca_raw or [], ca.display_name):
        users += [*policy.include_users, *policy.exclude_users]
        groups += [*policy.include_groups, *policy.exclude_groups]
        apps += policy.include_applications
    known_groups = {g.lower() for g in desired.group_ids()}
    return ([u for u in dict.fromkeys(users) if is_guid(u)], [a for a in dict.fromkeys(apps) if is_guid(a)],
            [g for g in dict.fromkeys(groups) if is_guid(g) and g.lower() not in known_groups])


# --- the builder --------------------------------------------------------------------------------------
class _Builder:
    def __init__(self, desired: DesiredState, groups: Mapping[str, Mapping[str, Any] | None],
                 directory: Mapping[str, Mapping[str, Any] | None] | None = None) -> None:
        self.desired = desired
        self.names = dict(desired.aaguid_names)
        self.groups = {str(k).lower(): v for k, v in groups.items()}
        self.directory = {str(k).lower(): v for k, v in (directory or {}).items()}
        self.labels: dict[str, str] = {}
        self.changes: list[ChangeRow] = []
        self.writes: list[dict[str, Any]] = []
        self.warnings: list[Issue] = []
        self.errors: list[Issue] = []
        self.narrowing: list[Narrowing] = []
        self.profile: dict[str, Any] | None = None
        self.method_before: dict[str, Any] | None = None
        self.method_after: dict[str, Any] | None = None
        self.strength_before: dict[str, Any] | None = None
        self.strength_after: dict[str, Any] | None = None
        self.unexcluded_ca: list[str] = []

    def warn(self, code: str, message: str) -> None:
        self.warnings.append(Issue(code, message))

    def error(self, code: str, message: str) -> None:
        self.errors.append(Issue(code, message))

    def change(self, area: str, field_: str, before: Any, after: Any, note: str = "") -> None:
        self.changes.append(ChangeRow(area, field_, before, after, note))

    # groups ----------------------------------------------------------------------------------------
    def check_group(self, gid: str, where: str, label: str | None, *, method_target: bool) -> None:
        shown = f"{gid} ({label})" if label else gid
        if gid not in self.groups:
            self.error("group_not_looked_up", f"{where}: group {shown} was not looked up; cannot check it")
            return
        group = self.groups[gid]
        if group is None:
            self.error("group_not_found", f"{where}: group {shown} does not exist")
            return
        name = group.get("displayName") or label
        shown = f"{gid} ({name})" if name else gid
        types = [str(t).lower() for t in _list(group.get("groupTypes"))]
        if method_target and "unified" in types:
            self.error("group_not_security",
                       f"{where}: group {shown} is a Microsoft 365 group; only security groups are supported")
        elif group.get("securityEnabled") is not True:
            self.error("group_not_security",
                       f"{where}: group {shown} is not security-enabled; only security groups are supported")

    def check_groups(self) -> None:
        method = self.desired.passkey_method
        for t in method.include_targets:
            if not t.is_all_users:
                self.check_group(t.id, "passkeyMethod.includeTargets", t.display_name, method_target=True)
        for t in method.exclude_targets:
            self.check_group(t.id, "passkeyMethod.excludeTargets", t.display_name, method_target=True)
        ca = self.desired.conditional_access
        if ca is not None:
            for gid in ca.include_groups:
                self.check_group(gid, "conditionalAccess.includeGroups", None, method_target=False)
            for gid in ca.exclude_groups:
                self.check_group(gid, "conditionalAccess.excludeGroups", None, method_target=False)

    def diff(self, fido2_raw: Mapping[str, Any], strengths_raw: object, ca_raw: object) -> None:
        """Compare the tenant with the document: changes, writes, narrowing, warnings and errors."""
        self.fido2(fido2_raw)
        self.label_strengths(strengths_raw)
        strength_ref = self.strength(strengths_raw)
        self.conditional_access(ca_raw, strength_ref)

    # names for people ------------------------------------------------------------------------------
    def label_strengths(self, strengths_raw: object) -> None:
        """Every strength the tenant lists as "<name> (<id>)", so grant rows read as names."""
        items = strengths_raw.get("value") if isinstance(strengths_raw, Mapping) else strengths_raw
        for raw in _list(items):
            if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
                self.labels[raw["id"].lower()] = f"{raw.get('displayName') or '(no name)'} ({raw['id']})"

    def label_principals(self) -> None:
        """Users, groups and applications the CA section names by id, as people know them.

        Names come in as data (`groups`, `directory`); a missing one shows the id with a note, never an error.
        """
        spec = self.desired.conditional_access
        if spec is None:
            return
        self.label_ids((*spec.include_groups, *spec.exclude_groups, *spec.include_users, *spec.exclude_users,
                        *spec.include_applications))

    def label_ids(self, ids: Iterable[str]) -> None:
        """Label each GUID from the group lookups or the `directory` (users, groups, applications)."""
        for oid in ids:
            key = oid.lower()
            if not is_guid(oid) or (key in self.labels and not self.labels[key].endswith("(name not readable)")):
                continue
            source = self.groups if key in self.groups else self.directory
            self.labels[key] = _principal_label(oid, key in source, source.get(key))

    # FIDO2 -----------------------------------------------------------------------------------------
    def fido2(self, raw: Mapping[str, Any]) -> None:
        spec = self.desired.passkey_method
        try:
            view = read_fido2(raw, spec.passkey_profile)
        except InputError as exc:
            self.error("profile_not_found", exc.message)
            return
        if view.mode == MODE_PROFILES:
            self.profile = {"id": view.profile_id, "name": view.profile_name}
        elif spec.passkey_profile is not None:
            self.warn("profile_ignored",
                      f"the document names passkey profile {spec.passkey_profile!r} but the tenant has no passkey "
                      "profiles yet; managing the (deprecated) top-level settings instead")
        self.warn_method(view)
        body: dict[str, Any] = {}

        if view.state != spec.state:
            body["state"] = spec.state
            self.change(AREA_METHOD, "state", view.state, spec.state)
            if view.state == "enabled" and spec.state != "enabled":
                self.narrowing.append(Narrowing("state_disabled",
                                                "the Passkey (FIDO2) method is turned off: no passkey sign-in"))
        if view.self_service_registration != spec.self_service_registration:
            body["isSelfServiceRegistrationAllowed"] = spec.self_service_registration
            self.change(AREA_METHOD, "isSelfServiceRegistrationAllowed", view.self_service_registration,
                        spec.self_service_registration)
        self.targets(view, body)

        profile: dict[str, Any] | None = None
        if view.mode == MODE_PROFILES and view.profile_index is not None:
            profile = copy.deepcopy(view.raw["passkeyProfiles"][view.profile_index])
        profile_changed = False

        if view.attestation_enforced != spec.attestation_enforced:
            self.change(AREA_METHOD, view.attestation_field,
                        self._attestation_value(view, view.attestation_enforced),
                        self._attestation_value(view, spec.attestation_enforced))
            if profile is not None:
                profile["attestationEnforcement"] = ATTESTATION_ON if spec.attestation_enforced else ATTESTATION_OFF
                profile_changed = True
            else:
                body["isAttestationEnforced"] = spec.attestation_enforced

        new_kr = self.key_restrictions(view)
        if new_kr is not None:
            if profile is not None:
                profile["keyRestrictions"] = new_kr
                profile_changed = True
            else:
                body["keyRestrictions"] = new_kr

        if profile is not None and profile_changed and view.profile_index is not None:
            profiles = [copy.deepcopy(p) for p in view.raw["passkeyProfiles"]]
            profiles[view.profile_index] = profile
            body["passkeyProfiles"] = profiles
        if body:
            self.writes.append(_write("patch_fido2", "fido2",
                                      {"@odata.type": FIDO2_ODATA_TYPE, **body}))

    @staticmethod
    def _attestation_value(view: Fido2View, on: bool) -> Any:
        if view.mode == MODE_PROFILES:
            return ATTESTATION_ON if on else ATTESTATION_OFF
        return on

    def warn_method(self, view: Fido2View) -> None:
        spec = self.desired.passkey_method
        kr = spec.key_restrictions
        if not spec.self_service_registration:
            self.warn("self_service_off",
                      "self-service set up is off: users cannot register a passkey in MySecurityInfo")
        if spec.attestation_enforced:
            self.warn("attestation_enforced",
                      "attestation is enforced: passkeys must be in the FIDO Alliance Metadata Service and pass "
                      "Microsoft's validation; the seed procedure says to leave it off for Authenticator passkeys")
        if not kr.enforced:
            self.warn("restrictions_not_enforced",
                      "key restrictions are not enforced: any passkey provider can be registered")
        if kr.enforcement_type == "block":
            hit = [a for a in kr.aaguids if a in AUTHENTICATOR_AAGUIDS]
            if hit and kr.enforced:
                self.warn("authenticator_blocked", "the block list contains Microsoft Authenticator: "
                          + _labels(hit, self.names))
        if len(spec.include_targets) > MANY_TARGETS:
            self.warn("many_targets",
                      f"{len(spec.include_targets)} include targets (more than {MANY_TARGETS}): saving may fail; "
                      "the documented workaround is to replace them with a single security group, in the same "
                      "operation")

    def targets(self, view: Fido2View, body: dict[str, Any]) -> None:
        spec = self.desired.passkey_method
        want_in = [t.id for t in spec.include_targets]
        have_in = view.include_ids
        if set(want_in) != set(have_in):
            by_id = {str(t.get("id", "")).lower(): t for t in view.include_targets}
            new_list: list[dict[str, Any]] = []
            for tid in want_in:
                if tid in by_id:
                    new_list.append(copy.deepcopy(by_id[tid]))
                else:
                    entry: dict[str, Any] = {"targetType": "group", "id": tid, "isRegistrationRequired": False}
                    if view.mode == MODE_PROFILES and view.profile_id:
                        entry["allowedPasskeyProfiles"] = [view.profile_id]
                    new_list.append(entry)
            body["includeTargets"] = new_list
            gone = [t for t in have_in if t not in want_in]
            self.change(AREA_METHOD, "includeTargets", have_in, want_in,
                        f"removed: {', '.join(gone)}" if gone else "")
            if gone and ALL_USERS not in want_in:
                self.narrowing.append(Narrowing(
                    "targets_narrowed", "include targets removed: " + ", ".join(gone)
                    + " (members outside the remaining targets can no longer use passkeys)", evaluable=False))
        want_out = [t.id for t in spec.exclude_targets]
        have_out = view.exclude_ids
        if set(want_out) != set(have_out):
            by_id = {str(t.get("id", "")).lower(): t for t in view.exclude_targets}
            body["excludeTargets"] = [copy.deepcopy(by_id[g]) if g in by_id else {"targetType": "group", "id": g}
                                      for g in want_out]
            added = [g for g in want_out if g not in have_out]
            self.change(AREA_METHOD, "excludeTargets", have_out, want_out,
                        f"added: {', '.join(added)}" if added else "")
            if added:
                self.narrowing.append(Narrowing(
                    "targets_narrowed", "groups newly excluded from passkeys: " + ", ".join(added), evaluable=False))
        if view.mode == MODE_PROFILES and view.profile_id:
            final = body.get("includeTargets", list(view.include_targets))
            for t in final:
                allowed = t.get("allowedPasskeyProfiles")
                if isinstance(allowed, list) and allowed and view.profile_id not in allowed:
                    self.warn("target_other_profile",
                              f"include target {t.get('id')} uses other passkey profiles than the managed "
                              f"{view.profile_name or view.profile_id!r}")

    def key_restrictions(self, view: Fido2View) -> dict[str, Any] | None:
        """Compute the new key restrictions; return the object to send, or None when unchanged."""
        spec = self.desired.passkey_method
        want = spec.key_restrictions
        cur = view.key_restrictions
        same_kind = cur.enforcement_type == want.enforcement_type
        base = cur.aaguids if same_kind else ()
        merged = merge_aaguids(base, want.aaguids, want.remove)
        before = method_summary(view)
        after = {"state": spec.state, "isEnforced": want.enforced, "enforcementType": want.enforcement_type,
                 "aaGuids": merged}
        self.method_before, self.method_after = before, after

        list_changed = dedupe_aaguids(cur.aaguids) != merged
        changed = cur.enforced != want.enforced or not same_kind or list_changed
        field_ = view.restrictions_field
        if cur.enforced != want.enforced:
            self.change(AREA_METHOD, f"{field_}.isEnforced", cur.enforced, want.enforced)
        if not same_kind:
            self.change(AREA_METHOD, f"{field_}.enforcementType", cur.enforcement_type, want.enforcement_type)
        if list_changed:
            added = [a for a in merged if aaguid_key(a) not in _keys(cur.aaguids)]
            removed = [a for a in dedupe_aaguids(cur.aaguids) if aaguid_key(a) not in _keys(merged)]
            parts = []
            if added:
                parts.append(f"+{len(added)} added")
            if removed:
                parts.append(f"-{len(removed)} removed" + (" (listed in remove)" if same_kind else
                                                           " (the old list was a " + cur.enforcement_type + " list)"))
            self.change(AREA_METHOD, f"{field_}.aaGuids", list(cur.aaguids), merged, ", ".join(parts))
        self.restriction_narrowing(before, after)
        if not changed:
            return None
        raw_kr: Any
        if view.mode == MODE_PROFILES and view.profile_index is not None:
            raw_kr = view.raw["passkeyProfiles"][view.profile_index].get("keyRestrictions") or {}
        else:
            raw_kr = view.raw.get("keyRestrictions") or {}
        kr = copy.deepcopy(raw_kr) if isinstance(raw_kr, dict) else {}
        kr.update({"isEnforced": want.enforced, "enforcementType": want.enforcement_type, "aaGuids": merged})
        return kr

    def restriction_narrowing(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        if before["state"] != "enabled" or after["state"] != "enabled" or not after["isEnforced"]:
            return
        b_list, a_list = before["aaGuids"], after["aaGuids"]
        if not before["isEnforced"]:
            verb = "only the listed keys" if after["enforcementType"] == "allow" else "all but the listed keys"
            self.narrowing.append(Narrowing(
                "enforcement_enabled", f"key restrictions become enforced ({after['enforcementType']}): {verb} work",
                tuple(a_list)))
            return
        b_mode, a_mode = before["enforcementType"], after["enforcementType"]
        if b_mode == "block" and a_mode == "allow":
            self.narrowing.append(Narrowing(
                "block_to_allow", "key restrictions switch from block to allow: only listed keys work afterwards",
                tuple(b_list)))
            self.warn("block_to_allow",
                      "switching key restrictions from block to allow: afterwards ONLY the listed keys work "
                      "(" + (_labels(a_list, self.names) or "none") + "); every other passkey provider stops "
                      "working. Blocked until now: " + (_labels(b_list, self.names) or "none"))
        elif b_mode == "allow" and a_mode == "block":
            self.narrowing.append(Narrowing(
                "allow_to_block", "key restrictions switch from allow to block: the listed keys stop working",
                tuple(a_list)))
        elif a_mode == "allow":
            removed = [a for a in b_list if aaguid_key(a) not in _keys(a_list)]
            if removed:
                self.narrowing.append(Narrowing(
                    "aaguids_removed", "AAGUIDs removed from the allow list: " + _labels(removed, self.names),
                    tuple(removed)))
        else:
            added = [a for a in a_list if aaguid_key(a) not in _keys(b_list)]
            if added:
                self.narrowing.append(Narrowing(
                    "aaguids_blocked", "AAGUIDs added to the block list: " + _labels(added, self.names),
                    tuple(added)))

    # strength --------------------------------------------------------------------------------------
    def strength(self, strengths_raw: object) -> str | None:
        """Plan the strength; return its id (or the placeholder), None when it cannot be referenced."""
        spec: StrengthSpec = self.desired.authentication_strength
        want = list(spec.allowed_aaguids)
        self.strength_after = {"acceptsFido2": True, "allowedAaguids": want}
        self.check_strength_vs_method(want)
        matches = strengths_named(strengths_raw, spec.display_name)
        if len(matches) > 1:
            self.error("strength_ambiguous", f"{len(matches)} authentication strengths are named "
                       f"{spec.display_name!r} ({', '.join(m.id for m in matches)}); rename or delete the extras")
            return None
        if not matches:
            return self.create_strength(spec, want)
        current = matches[0]
        if current.is_builtin:
            self.error("strength_builtin", f"authentication strength {spec.display_name!r} is built in and cannot "
                       "be changed; choose another displayName")
            return None
        self.update_strength(spec, current, want)
        return current.id

    def check_strength_vs_method(self, want: list[str]) -> None:
        after = self.method_after
        if after is None or not after["isEnforced"]:
            return
        off = [a for a in want if not aaguid_allowed(after, a, ignore_state=True)]
        if off:
            self.warn("strength_aaguid_not_allowed",
                      "the authentication strength accepts AAGUIDs the method policy does not allow: "
                      + _labels(off, self.names))

    def create_strength(self, spec: StrengthSpec, want: list[str]) -> str:
        body: dict[str, Any] = {"displayName": spec.display_name, "allowedCombinations": ["fido2"]}
        if spec.description is not None:
            body["description"] = spec.description
        self.writes.append(_write("create_strength", spec.display_name, body))
        self.change(AREA_STRENGTH, "displayName", None, spec.display_name, "new custom authentication strength")
        self.change(AREA_STRENGTH, "allowedCombinations", None, ["fido2"])
        self.writes.append(_write(
            "create_combination_configuration", spec.display_name,
            {"@odata.type": COMBINATION_ODATA_TYPE, "appliesToCombinations": ["fido2"], "allowedAAGUIDs": want},
            strengthId=STRENGTH_ID_PLACEHOLDER))
        self.change(AREA_STRENGTH, "combinationConfigurations[fido2].allowedAAGUIDs", None, want)
        self.labels[STRENGTH_ID_PLACEHOLDER] = f"the new strength {spec.display_name!r}"
        return STRENGTH_ID_PLACEHOLDER

    def update_strength(self, spec: StrengthSpec, current: StrengthView, want: list[str]) -> None:
        sid = current.id
        combos = list(current.allowed_combinations)
        accepts_fido2 = "fido2" in combos
        self.strength_before = {"acceptsFido2": accepts_fido2, "allowedAaguids": current.allowed_aaguids}
        body: dict[str, Any] = {}
        if current.display_name != spec.display_name:
            body["displayName"] = spec.display_name
            self.change(AREA_STRENGTH, "displayName", current.display_name, spec.display_name)
        if spec.description is not None and (current.description or "") != spec.description:
            body["description"] = spec.description
            self.change(AREA_STRENGTH, "description", current.description, spec.description)
        if body:
            self.writes.append(_write("update_strength", spec.display_name, body, strengthId=sid))
        if combos != ["fido2"]:
            self.writes.append(_write("update_strength_combinations", spec.display_name,
                                      {"allowedCombinations": ["fido2"]}, strengthId=sid))
            others = [c for c in combos if c != "fido2"]
            self.change(AREA_STRENGTH, "allowedCombinations", combos, ["fido2"],
                        "only passkeys (FIDO2) will satisfy the strength" if others else "")
            if others:
                self.narrowing.append(Narrowing(
                    "strength_methods_narrowed", "the strength stops accepting: " + ", ".join(others),
                    evaluable=False))
        configs = current.fido2_configurations
        if len(configs) > 1:
            self.warn("strength_many_configs", f"the strength has {len(configs)} FIDO2 combination configurations; "
                      "only the first is managed")
        if not configs:
            self.writes.append(_write(
                "create_combination_configuration", spec.display_name,
                {"@odata.type": COMBINATION_ODATA_TYPE, "appliesToCombinations": ["fido2"], "allowedAAGUIDs": want},
                strengthId=sid))
            self.change(AREA_STRENGTH, "combinationConfigurations[fido2].allowedAAGUIDs", None, want,
                        "until now any passkey satisfied the strength" if accepts_fido2 else "")
            if accepts_fido2:
                self.narrowing.append(Narrowing(
                    "strength_restricted", "the strength starts accepting only these AAGUIDs: "
                    + _labels(want, self.names), tuple(want)))
            return
        config = configs[0]
        have = current.allowed_aaguids or []
        body = {}
        if not _same_set(have, want):
            body["allowedAAGUIDs"] = want
            removed = [a for a in have if aaguid_key(a) not in _keys(want)]
            self.change(AREA_STRENGTH, "combinationConfigurations[fido2].allowedAAGUIDs",
                        _list(config.get("allowedAAGUIDs")), want,
                        f"-{len(removed)} removed" if removed else "")
            if removed and accepts_fido2:
                self.narrowing.append(Narrowing(
                    "strength_aaguids_removed", "AAGUIDs the strength stops accepting: "
                    + _labels(removed, self.names), tuple(removed)))
        if _list(config.get("appliesToCombinations")) != ["fido2"]:
            body["appliesToCombinations"] = ["fido2"]
            self.change(AREA_STRENGTH, "combinationConfigurations[fido2].appliesToCombinations",
                        config.get("appliesToCombinations"), ["fido2"])
        if body:
            self.writes.append(_write(
                "update_combination_configuration", spec.display_name, {"@odata.type": COMBINATION_ODATA_TYPE, **body},
                strengthId=sid, configurationId=str(config.get("id", ""))))

    # Conditional Access ----------------------------------------------------------------------------
    def conditional_access(self, ca_raw: object, strength_ref: str | None) -> None:
        spec = self.desired.conditional_access
        if spec is None:
            return
        if not spec.exclude_users and not spec.exclude_groups:
            self.warn("no_emergency_access",
                      f"CA policy {spec.display_name!r} excludes no emergency-access account or group")
        matches = ca_policies_named(ca_raw, spec.display_name)
        if len(matches) > 1:
            self.error("ca_ambiguous", f"{len(matches)} Conditional Access policies are named "
                       f"{spec.display_name!r} ({', '.join(m.id for m in matches)}); rename or delete the extras")
            return
        if strength_ref is None:
            return  # the strength error already blocks the plan; nothing sensible to reference
        writes_before = len(self.writes)
        if not matches:
            self.create_ca(spec, strength_ref)
        else:
            self.update_ca(spec, matches[0], strength_ref)
        if len(self.writes) > writes_before and spec.state == "enabled" and not (spec.exclude_users
                                                                                 or spec.exclude_groups):
            self.unexcluded_ca.append(spec.display_name)

    def create_ca(self, spec: ConditionalAccessSpec, strength_ref: str) -> None:
        body = {
            "displayName": spec.display_name,
            "state": spec.state,
            "conditions": {
                "clientAppTypes": ["all"],
                "applications": {"includeApplications": list(spec.include_applications)},
                "users": {"includeUsers": list(spec.include_users), "includeGroups": list(spec.include_groups),
                          "excludeUsers": list(spec.exclude_users), "excludeGroups": list(spec.exclude_groups)},
            },
            "grantControls": {"operator": "OR", "authenticationStrength": {"id": strength_ref}},
        }
        self.writes.append(_write("create_ca_policy", spec.display_name, body))
        self.change(AREA_CA, "displayName", None, spec.display_name, "new Conditional Access policy")
        self.change(AREA_CA, "state", None, spec.state)
        self.change(AREA_CA, "grantControls.authenticationStrength.id", None, strength_ref)
        for name, values in (("users.includeUsers", spec.include_users), ("users.includeGroups", spec.include_groups),
                             ("users.excludeUsers", spec.exclude_users), ("users.excludeGroups", spec.exclude_groups),
                             ("applications.includeApplications", spec.include_applications)):
            self.change(AREA_CA, f"conditions.{name}", None, list(values))
        if spec.state == "enabled":
            self.narrowing.append(Narrowing(
                "ca_enforced", f"CA policy {spec.display_name!r} is created enforced: users without an approved "
                "passkey lose access to the included applications", evaluable=False))

    def update_ca(self, spec: ConditionalAccessSpec, current: CaPolicyView, strength_ref: str) -> None:
        self.label_ids((*current.include_users, *current.exclude_users, *current.include_groups,
                        *current.exclude_groups, *current.include_applications))
        body: dict[str, Any] = {}
        if current.display_name != spec.display_name:
            body["displayName"] = spec.display_name
            self.change(AREA_CA, "displayName", current.display_name, spec.display_name)
        if current.state != spec.state:
            body["state"] = spec.state
            self.change(AREA_CA, "state", current.state, spec.state)
        pairs = (("includeUsers", current.include_users, spec.include_users),
                 ("includeGroups", current.include_groups, spec.include_groups),
                 ("excludeUsers", current.exclude_users, spec.exclude_users),
                 ("excludeGroups", current.exclude_groups, spec.exclude_groups))
        conditions_changed = False
        for name, have, want in pairs:
            if not _same_set(have, want):
                conditions_changed = True
                self.change(AREA_CA, f"conditions.users.{name}", list(have), list(want))
        if not _same_set(current.include_applications, spec.include_applications):
            conditions_changed = True
            self.change(AREA_CA, "conditions.applications.includeApplications", list(current.include_applications),
                        list(spec.include_applications))
        if conditions_changed:
            raw_conditions = current.raw.get("conditions")
            conditions: dict[str, Any] = copy.deepcopy(raw_conditions) if isinstance(raw_conditions, dict) else {}
            users: dict[str, Any] = conditions["users"] if isinstance(conditions.get("users"), dict) else {}
            users.update({"includeUsers": list(spec.include_users), "includeGroups": list(spec.include_groups),
                          "excludeUsers": list(spec.exclude_users), "excludeGroups": list(spec.exclude_groups)})
            apps: dict[str, Any] = (conditions["applications"] if isinstance(conditions.get("applications"), dict)
                                    else {})
            apps["includeApplications"] = list(spec.include_applications)
            conditions["users"], conditions["applications"] = users, apps
            body["conditions"] = conditions
        grant_changed = bool(current.grant_operator != "OR" or current.built_in_controls
                             or (current.strength_id or "").lower() != strength_ref.lower())
        if grant_changed:
            grant: dict[str, Any] = {"operator": "OR", "authenticationStrength": {"id": strength_ref}}
            if current.built_in_controls:
                grant["builtInControls"] = []
                self.change(AREA_CA, "grantControls.builtInControls", list(current.built_in_controls), [])
            if current.grant_operator != "OR":
                self.change(AREA_CA, "grantControls.operator", current.grant_operator, "OR")
            if (current.strength_id or "").lower() != strength_ref.lower():
                self.change(AREA_CA, "grantControls.authenticationStrength.id", current.strength_id, strength_ref)
            body["grantControls"] = grant
        if body:
            self.writes.append(_write("update_ca_policy", spec.display_name, body, policyId=current.id))
        if spec.state == "enabled" and (current.state != "enabled" or conditions_changed or grant_changed):
            self.narrowing.append(Narrowing(
                "ca_enforced", f"CA policy {spec.display_name!r} is enforced with new settings: users without an "
                "approved passkey may lose access to the included applications", evaluable=False))


def drift(desired: DesiredState, current_raw_fido2: Mapping[str, Any], strengths_raw: object,
          ca_raw: object) -> list[ChangeRow]:
    """Every field the document decides that differs in the tenant: the changes `build_plan` would list.

    Pure, and the same diff as the plan's (so `verify` and `plan` cannot disagree); group lookups are not
    needed because they only produce errors, never changes.
    """
    b = _Builder(desired, {})
    b.diff(current_raw_fido2, strengths_raw, ca_raw)
    return b.changes


def build_plan(desired: DesiredState, current_raw_fido2: Mapping[str, Any], strengths_raw: object,
               ca_raw: object, groups: Mapping[str, Mapping[str, Any] | None],
               directory: Mapping[str, Mapping[str, Any] | None] | None = None) -> Plan:
    """Diff the desired state against the tenant as read, and list the writes that would close the gap.

    Pure. `strengths_raw` / `ca_raw` are Graph list JSON (a list or `{"value": [...]}`); attach each
    strength's combination configurations to it as `combinationConfigurations` (at least for ours).
    `groups` maps every id from `desired.group_ids()` to the raw `GET /groups/{id}` JSON, or None on 404.
    `directory` maps the user and application ids the CA section names to their raw `GET /users/{id}` or
    `GET /servicePrincipals(appId='{id}')` JSON, None on 404; an id left out could not be read. Only for
    showing names: a missing name never changes the plan.
    """
    b = _Builder(desired, groups, directory)
    b.check_groups()
    b.diff(current_raw_fido2, strengths_raw, ca_raw)
    b.label_principals()
    plan = Plan(
        mode=fido2_mode(current_raw_fido2),
        state_hash=state_hash(desired, current_raw_fido2, strengths_raw, ca_raw),
        desired_hash=desired_hash(desired),
        changes=b.changes, writes=b.writes, warnings=b.warnings, errors=b.errors, narrowing=b.narrowing,
        aaguid_names=b.names, profile=b.profile, method_before=b.method_before, method_after=b.method_after,
        strength_before=b.strength_before, strength_after=b.strength_after, unexcluded_ca=b.unexcluded_ca,
        labels=b.labels,
    )
    log.info("plan built: mode=%s writes=%d errors=%d narrowing=%d", plan.mode, len(plan.writes),
             len(plan.errors), len(plan.narrowing))
    return plan


# --- lockout -----------------------------------------------------------------------------------------
def _strength_accepts(summary: Mapping[str, Any], aaguid: str) -> bool:
    if not summary.get("acceptsFido2"):
        return False
    allowed = summary.get("allowedAaguids")
    return allowed is None or aaguid_key(aaguid) in _keys(allowed)


def lockout_impact(plan: Plan, passkeys_by_user: Mapping[str, Sequence[Mapping[str, Any]]],
                   upn_by_user: Mapping[str, str]) -> list[LockoutRow]:
    """Every registered passkey that works today and would not after the plan.

    `passkeys_by_user` maps a user id to the raw `fido2Methods` JSON (`id`, `aaGuid`, `model`…). A row's
    scope is "method" when the method policy would reject the key, "strength" when the key still signs in
    but no longer satisfies the authentication strength. Users in sorted id order, keys as given.
    """
    rows: list[LockoutRow] = []
    mb, ma = plan.method_before, plan.method_after
    sb, sa = plan.strength_before, plan.strength_after
    for user_id in sorted(passkeys_by_user):
        for method in passkeys_by_user[user_id]:
            aaguid = method.get("aaGuid")
            aaguid = aaguid if isinstance(aaguid, str) else ""
            scope = None
            if mb is not None and ma is not None and aaguid_allowed(mb, aaguid) and not aaguid_allowed(ma, aaguid):
                scope = "method"
            elif sb is not None and sa is not None and _strength_accepts(sb, aaguid) and not _strength_accepts(
                    sa, aaguid):
                scope = "strength"
            if scope is None:
                continue
            model = method.get("model")
            pid = method.get("id")
            rows.append(LockoutRow(
                user_id=user_id, upn=upn_by_user.get(user_id), passkey_id=pid if isinstance(pid, str) else None,
                aaguid=normalise(aaguid), name=name_of(aaguid, plan.aaguid_names) if aaguid else "(no AAGUID)",
                model=model if isinstance(model, str) else None, scope=scope))
    return rows


def normalise(aaguid: str) -> str:
    """Lowercase a GUID, leave anything else as it is."""
    return aaguid.lower() if is_guid(aaguid) else aaguid


def attach_lockout(plan: Plan, passkeys_by_user: Mapping[str, Sequence[Mapping[str, Any]]],
                   upn_by_user: Mapping[str, str]) -> Plan:
    """A copy of `plan` with `lockout` filled by `lockout_impact` and marked evaluated."""
    return dataclasses.replace(plan, lockout=lockout_impact(plan, passkeys_by_user, upn_by_user),
                               lockout_evaluated=True)


# --- applying locally, placeholders ------------------------------------------------------------------
def apply_patch_locally(raw: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """What the FIDO2 configuration looks like after Graph applies `body` (PATCH semantics we rely on:
    omitted properties keep their values; every property sent, collections included, is replaced whole).

    Used to predict the read-back after an apply, and by the idempotence tests.
    """
    out = copy.deepcopy(dict(raw))
    for key, value in body.items():
        if key == "@odata.type" and "@odata.type" in out:
            continue
        out[key] = copy.deepcopy(value)
    return out


def fill_strength_id(writes: Sequence[Mapping[str, Any]], strength_id: str) -> list[dict[str, Any]]:
    """Copies of `writes` with `{{strength.id}}` replaced by the id `create_strength` returned."""
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(STRENGTH_ID_PLACEHOLDER, strength_id)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value
    return [fill(dict(w)) for w in writes]


# --- stored plans -----------------------------------------------------------------------------------
def write_to_json(write: Mapping[str, Any]) -> dict[str, Any]:
    """A planned write as stored and shown: its method and path (from shared/graph/policy_paths.py) beside
    what it does, so people see where it goes."""
    method, path = write_request(write)
    return {"op": write["op"], "method": method, "path": path,
            **copy.deepcopy({k: v for k, v in write.items() if k != "op"})}


def write_from_json(write: Mapping[str, Any]) -> dict[str, Any]:
    """A stored write back as the plan holds it: the method and path are derived, so they are dropped."""
    return copy.deepcopy({k: v for k, v in write.items() if k not in ("method", "path")})


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data (camelCase keys, `version` for future readers)."""
    return {
        "version": PLAN_FORMAT_VERSION,
        "mode": plan.mode,
        "stateHash": plan.state_hash,
        "desiredHash": plan.desired_hash,
        "changes": [{"area": c.area, "field": c.field, "before": c.before, "after": c.after, "note": c.note}
                    for c in plan.changes],
        "writes": [write_to_json(w) for w in plan.writes],
        "warnings": [{"code": i.code, "message": i.message} for i in plan.warnings],
        "errors": [{"code": i.code, "message": i.message} for i in plan.errors],
        "narrowing": [{"kind": n.kind, "detail": n.detail, "aaguids": list(n.aaguids), "evaluable": n.evaluable}
                      for n in plan.narrowing],
        "lockout": [{"userId": r.user_id, "upn": r.upn, "passkeyId": r.passkey_id, "aaguid": r.aaguid,
                     "name": r.name, "model": r.model, "scope": r.scope} for r in plan.lockout],
        "lockoutEvaluated": plan.lockout_evaluated,
        "aaguidNames": dict(plan.aaguid_names),
        "profile": copy.deepcopy(plan.profile),
        "methodBefore": copy.deepcopy(plan.method_before),
        "methodAfter": copy.deepcopy(plan.method_after),
        "strengthBefore": copy.deepcopy(plan.strength_before),
        "strengthAfter": copy.deepcopy(plan.strength_after),
        "unexcludedEnforcedPolicies": list(plan.unexcluded_ca),
        "labels": dict(plan.labels),
        # Derived, for readers that do not load the plan back (API responses):
        "empty": plan.empty,
        "blocked": plan.blocked,
        "requiresAcceptance": plan.requires_acceptance,
        "requiresEmergencyAcceptance": plan.requires_emergency_acceptance,
    }


def plan_from_json(doc: object) -> Plan:
    """Load a stored plan; a malformed document is an `InputError` naming the field."""
    def bad(field_: str, problem: str) -> InputError:
        return InputError(f"stored plan is malformed: {field_}: {problem}",
                          detail=[{"field": field_, "problem": problem}])

    if not isinstance(doc, dict):
        raise bad("(plan)", "must be an object")
    if doc.get("version") != PLAN_FORMAT_VERSION:
        raise bad("version", f"unsupported plan format {doc.get('version')!r}")

    def items(key: str) -> list[dict[str, Any]]:
        value = doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise bad(key, "must be an array of objects")
        return value

    def rows(key: str, build: Callable[[dict[str, Any]], Any]) -> list[Any]:
        out = []
        for i, item in enumerate(items(key)):
            try:
                out.append(build(item))
            except KeyError as exc:
                raise bad(f"{key}[{i}].{exc.args[0]}", "required field missing") from None
        return out

    def text(key: str) -> str:
        value = doc.get(key)
        if not isinstance(value, str):
            raise bad(key, "must be a string")
        return value

    def opt_dict(key: str) -> dict[str, Any] | None:
        value = doc.get(key)
        if value is not None and not isinstance(value, dict):
            raise bad(key, "must be an object or null")
        return copy.deepcopy(value)

    writes = items("writes")
    for i, w in enumerate(writes):
        if w.get("op") not in WRITE_OPS:
            raise bad(f"writes[{i}].op", f"unknown op {w.get('op')!r}")
        if not isinstance(w.get("body"), dict):
            raise bad(f"writes[{i}]", "needs an object body")
    names = doc.get("aaguidNames", {})
    if not isinstance(names, dict):
        raise bad("aaguidNames", "must be an object")
    labels = doc.get("labels", {})
    if not isinstance(labels, dict):
        raise bad("labels", "must be an object")
    return Plan(
        mode=text("mode"), state_hash=text("stateHash"), desired_hash=text("desiredHash"),
        changes=rows("changes", lambda c: ChangeRow(str(c["area"]), str(c["field"]), c.get("before"),
                                                    c.get("after"), str(c.get("note", "")))),
        writes=[write_from_json(w) for w in writes],
        warnings=rows("warnings", lambda i: Issue(str(i["code"]), str(i["message"]))),
        errors=rows("errors", lambda i: Issue(str(i["code"]), str(i["message"]))),
        narrowing=rows("narrowing", lambda n: Narrowing(
            str(n["kind"]), str(n["detail"]), tuple(str(a) for a in _list(n.get("aaguids"))),
            bool(n.get("evaluable", True)))),
        lockout=rows("lockout", lambda r: LockoutRow(
            str(r["userId"]), r.get("upn"), r.get("passkeyId"), str(r["aaguid"]), str(r.get("name", r["aaguid"])),
            r.get("model"), str(r.get("scope", "method")))),
        lockout_evaluated=doc.get("lockoutEvaluated") is True,
        aaguid_names={str(k): str(v) for k, v in names.items()},
        profile=opt_dict("profile"), method_before=opt_dict("methodBefore"),
        method_after=opt_dict("methodAfter"), strength_before=opt_dict("strengthBefore"),
        strength_after=opt_dict("strengthAfter"),
        unexcluded_ca=[str(n) for n in _list(doc.get("unexcludedEnforcedPolicies"))],
        labels={str(k): str(v) for k, v in labels.items()},
    )


# --- rendering -----------------------------------------------------------------------------------------
def format_value(value: Any, names: Mapping[str, str] | None = None) -> list[str]:
    """A value as display lines: lists one item per line, AAGUIDs with their names beside them."""
    if value is None:
        return ["(none)"]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, list | tuple):
        if not value:
            return ["(empty)"]
        return [line for item in value for line in format_value(item, names)]
    if isinstance(value, str):
        return [label_of(value, names) if is_guid(value) else value]
    if isinstance(value, dict):
        return [json.dumps(value, sort_keys=True)]
    return [str(value)]


#: CA keywords in words, by what the field lists.
USER_WORDS = {"all": "All users", "guestsorexternalusers": "Guests or external users", "none": "No users"}
APP_WORDS = {"all": "All cloud apps", "office365": "Office 365", "microsoftadminportals": "Microsoft Admin Portals",
             "none": "No cloud apps"}


def _principal_label(oid: str, looked_up: bool, raw: Mapping[str, Any] | None) -> str:
    """"<name> (<UPN or id>)"; the id with "(not found)" or "(name not readable)" when there is no name."""
    if not looked_up:
        return f"{oid} (name not readable)"
    if raw is None:
        return f"{oid} (not found)"
    name = raw.get("displayName")
    upn = raw.get("userPrincipalName")
    if isinstance(name, str) and name:
        return f"{name} ({upn if isinstance(upn, str) and upn else oid})"
    return f"{upn} ({oid})" if isinstance(upn, str) and upn else f"{oid} (no name)"


def human_value(plan: Plan, change: ChangeRow, value: Any) -> list[str]:
    """A change's before or after as people read it: ids by name, CA keywords in words, no placeholder.

    The row keeps the ids (machines and the stored plan use them); only the display is translated.
    """
    words = (APP_WORDS if change.field.endswith("Applications") else
             USER_WORDS if change.field.endswith("Users") and change.area == AREA_CA else {})

    def one(item: Any) -> Any:
        if not isinstance(item, str):
            return item
        if item.lower() in words:
            return words[item.lower()]
        return plan.labels.get(item.lower(), item)

    shown = [one(v) for v in value] if isinstance(value, list | tuple) else one(value)
    return format_value(shown, plan.aaguid_names)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[list[str]]]) -> str:
    """A fixed-width text table; each cell is a list of lines, so one row may span several lines."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], *(len(line) for line in cell)) if cell else widths[i]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    for row in rows:
        height = max((len(c) for c in row), default=1)
        for n in range(height):
            out.append(line([c[n] if n < len(c) else "" for c in row]))
    return "\n".join(out)


def render_plan_table(plan: Plan) -> str:
    """The plan for people: a fixed-width table of changes, then errors, warnings, narrowing, lockout."""
    names = plan.aaguid_names
    parts: list[str] = []
    head = f"Plan ({plan.mode} mode"
    if plan.profile:
        head += f", passkey profile {plan.profile.get('name') or plan.profile.get('id')}"
    head += f"): {len(plan.changes)} change(s), {len(plan.writes)} write(s)"
    parts.append(head)
    if plan.changes:
        rows = [[[c.area], [c.field], human_value(plan, c, c.before), human_value(plan, c, c.after),
                 [c.note] if c.note else [""]] for c in plan.changes]
        parts.append(render_table(["AREA", "FIELD", "BEFORE", "AFTER", "NOTE"], rows))
    else:
        parts.append("No changes: the tenant matches the desired state.")
    for title, issues in (("ERRORS (the plan cannot be applied)", plan.errors), ("WARNINGS", plan.warnings)):
        if issues:
            parts.append(title + ":\n" + "\n".join(f"  - [{i.code}] {i.message}" for i in issues))
    if plan.narrowing:
        parts.append("NARROWING (what shrinks):\n" + "\n".join(
            f"  - [{n.kind}] {n.detail}" + ("" if n.evaluable else " (impact cannot be evaluated)")
            for n in plan.narrowing))
    if plan.lockout_evaluated:
        if plan.lockout:
            rows = [[[r.upn or r.user_id], [r.passkey_id or ""], [label_of(r.aaguid, names) if r.aaguid else ""],
                     [r.model or ""], [r.scope]] for r in plan.lockout]
            parts.append(f"LOCKOUT: {len(plan.lockout)} registered passkey(s) would stop working:\n"
                         + render_table(["USER", "PASSKEY", "AAGUID", "MODEL", "SCOPE"], rows))
        else:
            parts.append("LOCKOUT: no registered passkey would stop working.")
    elif plan.needs_lockout_evaluation:
        parts.append("LOCKOUT: not evaluated yet.")
    if plan.blocked:
        parts.append("This plan cannot be applied until the errors above are fixed; accepting it would not help.")
    elif plan.requires_acceptance:
        parts.append("This plan requires explicit acceptance before it is applied.")
    if plan.unexcluded_ca:
        parts.append("NO EMERGENCY ACCESS: enforced Conditional Access polic(ies) excluding no emergency-access "
                     f"account or group: {', '.join(plan.unexcluded_ca)}. Applying needs a separate acceptance.")
    return "\n\n".join(parts) + "\n"


__all__ = [
    "MANY_TARGETS", "STRENGTH_ID_PLACEHOLDER", "WRITE_OPS", "ChangeRow", "Issue", "LockoutRow", "Narrowing", "Plan",
    "apply_patch_locally", "attach_lockout", "build_plan", "drift", "fill_strength_id", "format_value", "human_value",
    "lockout_impact", "merge_aaguids", "names_to_read", "plan_from_json", "plan_to_json", "render_plan_table",
    "render_table", "state_hash",
]
