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

What a plan holds, and the format of its writes: `plan_model.py`. The lockout impact: `lockout.py`; the
plan as stored JSON: `plan_codec.py`; the plan for people: `render.py`.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from shared.ids import is_guid
from shared.policy.aaguids import aaguid_key
from shared.policy.current import (
    COMBINATION_ODATA_TYPE,
    CaPolicyView,
    StrengthView,
    aaguid_allowed,
    ca_policies_named,
    fido2_mode,
    strengths_named,
    strip_volatile,
)
from shared.policy.document import ConditionalAccessSpec, DesiredState, StrengthSpec, canonical_sha256, desired_hash
from shared.policy.plan_method import PlanBuilder, keys_of, labels_of, list_of, planned_write, same_set
from shared.policy.plan_model import AREA_CA, AREA_STRENGTH, STRENGTH_ID_PLACEHOLDER, ChangeRow, Narrowing, Plan

log = logging.getLogger(__name__)


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
class _Builder(PlanBuilder):
    """The whole comparison: the passkey method (PlanBuilder), then the strength and Conditional Access."""

    def diff(self, fido2_raw: Mapping[str, Any], strengths_raw: object, ca_raw: object) -> None:
        """Compare the tenant with the document: changes, writes, narrowing, warnings and errors."""
        self.fido2(fido2_raw)
        self.label_strengths(strengths_raw)
        strength_ref = self.strength(strengths_raw)
        self.conditional_access(ca_raw, strength_ref)

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
                      + labels_of(off, self.names))

    def create_strength(self, spec: StrengthSpec, want: list[str]) -> str:
        body: dict[str, Any] = {"displayName": spec.display_name, "allowedCombinations": ["fido2"]}
        if spec.description is not None:
            body["description"] = spec.description
        self.writes.append(planned_write("create_strength", spec.display_name, body))
        self.change(AREA_STRENGTH, "displayName", None, spec.display_name, "new custom authentication strength")
        self.change(AREA_STRENGTH, "allowedCombinations", None, ["fido2"])
        self.writes.append(planned_write(
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
            self.writes.append(planned_write("update_strength", spec.display_name, body, strengthId=sid))
        if combos != ["fido2"]:
            self.writes.append(planned_write("update_strength_combinations", spec.display_name,
                                             {"allowedCombinations": ["fido2"]}, strengthId=sid))
            others = [c for c in combos if c != "fido2"]
            self.change(AREA_STRENGTH, "allowedCombinations", combos, ["fido2"],
                        "only passkeys (FIDO2) will satisfy the strength" if others else "")
            if others:
                self.narrowing.append(Narrowing(
                    "strength_methods_narrowed", "the strength stops accepting: " + ", ".join(others),
                    evaluable=False))
        self.strength_configuration(spec, current, want, accepts_fido2=accepts_fido2)

    def strength_configuration(self, spec: StrengthSpec, current: StrengthView, want: list[str], *,
                               accepts_fido2: bool) -> None:
        """The strength's FIDO2 combination configuration: create it, or update the first one's AAGUIDs."""
        sid = current.id
        configs = current.fido2_configurations
        if len(configs) > 1:
            self.warn("strength_many_configs", f"the strength has {len(configs)} FIDO2 combination configurations; "
                      "only the first is managed")
        if not configs:
            self.writes.append(planned_write(
                "create_combination_configuration", spec.display_name,
                {"@odata.type": COMBINATION_ODATA_TYPE, "appliesToCombinations": ["fido2"], "allowedAAGUIDs": want},
                strengthId=sid))
            self.change(AREA_STRENGTH, "combinationConfigurations[fido2].allowedAAGUIDs", None, want,
                        "until now any passkey satisfied the strength" if accepts_fido2 else "")
            if accepts_fido2:
                self.narrowing.append(Narrowing(
                    "strength_restricted", "the strength starts accepting only these AAGUIDs: "
                    + labels_of(want, self.names), tuple(want)))
            return
        config = configs[0]
        have = current.allowed_aaguids or []
        body = {}
        if not same_set(have, want):
            body["allowedAAGUIDs"] = want
            removed = [a for a in have if aaguid_key(a) not in keys_of(want)]
            self.change(AREA_STRENGTH, "combinationConfigurations[fido2].allowedAAGUIDs",
                        list_of(config.get("allowedAAGUIDs")), want,
                        f"-{len(removed)} removed" if removed else "")
            if removed and accepts_fido2:
                self.narrowing.append(Narrowing(
                    "strength_aaguids_removed", "AAGUIDs the strength stops accepting: "
                    + labels_of(removed, self.names), tuple(removed)))
        if list_of(config.get("appliesToCombinations")) != ["fido2"]:
            body["appliesToCombinations"] = ["fido2"]
            self.change(AREA_STRENGTH, "combinationConfigurations[fido2].appliesToCombinations",
                        config.get("appliesToCombinations"), ["fido2"])
        if body:
            self.writes.append(planned_write(
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
        self.writes.append(planned_write("create_ca_policy", spec.display_name, body))
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
            if not same_set(have, want):
                conditions_changed = True
                self.change(AREA_CA, f"conditions.users.{name}", list(have), list(want))
        if not same_set(current.include_applications, spec.include_applications):
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
            self.writes.append(planned_write("update_ca_policy", spec.display_name, body, policyId=current.id))
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
