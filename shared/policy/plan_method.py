"""The passkey method's half of the plan: the builder's state, the group checks, names for people, and the
FIDO2 configuration compared with the document (state, targets, attestation, key restrictions and the AAGUID
merge). Pure; `plan.py` builds on it for the strength and Conditional Access.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from shared.errors import InputError
from shared.ids import is_guid
from shared.policy.aaguids import AUTHENTICATOR_AAGUIDS, aaguid_key, dedupe_aaguids, label_of
from shared.policy.current import (
    ATTESTATION_OFF,
    ATTESTATION_ON,
    FIDO2_ODATA_TYPE,
    MODE_PROFILES,
    Fido2View,
    method_summary,
    read_fido2,
)
from shared.policy.document import ALL_USERS, DesiredState
from shared.policy.plan_model import AREA_METHOD, ChangeRow, Issue, Narrowing

#: More include targets than this and the portal's save may fail (seed: use one group instead).
MANY_TARGETS = 10


def keys_of(values: Iterable[str]) -> set[str]:
    """The AAGUIDs as comparison keys (case-insensitive)."""
    return {aaguid_key(v) for v in values}


def labels_of(aaguids: Iterable[str], names: Mapping[str, str]) -> str:
    """AAGUIDs with their names, for a message."""
    return ", ".join(label_of(a, names) for a in aaguids)


def merge_aaguids(current: Sequence[str], wanted: Sequence[str], remove: Sequence[str]) -> list[str]:
    """current + wanted - remove (as sets), case-insensitive, current order first, then new ones.

    Nothing in `current` is dropped unless it is in `remove`: that is the whole point.
    """
    gone = keys_of(remove)
    return dedupe_aaguids([a for a in (*current, *wanted) if aaguid_key(a) not in gone])


def planned_write(op: str, target: str, body: dict[str, Any], **ids: str) -> dict[str, Any]:
    """A planned write: what it does, to which object (display name and ids), and the body to send."""
    return {"op": op, "target": target, **ids, "body": body}


def same_set(a: Iterable[str], b: Iterable[str]) -> bool:
    """True when both hold the same strings, ignoring case and order."""
    return {x.lower() for x in a} == {x.lower() for x in b}


def list_of(value: Any) -> list[Any]:
    """A JSON array as a list; anything else as an empty one."""
    return list(value) if isinstance(value, list | tuple) else []


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


class PlanBuilder:
    """What a plan collects while comparing, the group checks and names for people, and the passkey
    method's half of the comparison (plan.py adds the strength's and Conditional Access's)."""

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
        types = [str(t).lower() for t in list_of(group.get("groupTypes"))]
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

    # names for people ------------------------------------------------------------------------------
    def label_strengths(self, strengths_raw: object) -> None:
        """Every strength the tenant lists as "<name> (<id>)", so grant rows read as names."""
        items = strengths_raw.get("value") if isinstance(strengths_raw, Mapping) else strengths_raw
        for raw in list_of(items):
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
            self.writes.append(planned_write("patch_fido2", "fido2",
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
                          + labels_of(hit, self.names))
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
            added = [a for a in merged if aaguid_key(a) not in keys_of(cur.aaguids)]
            removed = [a for a in dedupe_aaguids(cur.aaguids) if aaguid_key(a) not in keys_of(merged)]
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
                      "(" + (labels_of(a_list, self.names) or "none") + "); every other passkey provider stops "
                      "working. Blocked until now: " + (labels_of(b_list, self.names) or "none"))
        elif b_mode == "allow" and a_mode == "block":
            self.narrowing.append(Narrowing(
                "allow_to_block", "key restrictions switch from allow to block: the listed keys stop working",
                tuple(a_list)))
        elif a_mode == "allow":
            removed = [a for a in b_list if aaguid_key(a) not in keys_of(a_list)]
            if removed:
                self.narrowing.append(Narrowing(
                    "aaguids_removed", "AAGUIDs removed from the allow list: " + labels_of(removed, self.names),
                    tuple(removed)))
        else:
            added = [a for a in a_list if aaguid_key(a) not in keys_of(b_list)]
            if added:
                self.narrowing.append(Narrowing(
                    "aaguids_blocked", "AAGUIDs added to the block list: " + labels_of(added, self.names),
                    tuple(added)))
