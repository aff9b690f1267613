"""The rollback plan: undo what one apply run changed, object by object, and say what it cannot (no I/O).

An apply run records the tenant `before` and `after` its writes (FIDO2 configuration, authentication
strengths, Conditional Access policies) and the plan it sent. The objects the run changed are those its
plan wrote that differ between the two snapshots. For each of them the tenant read now decides:

- **as before** (the object is already as the run found it; a deleted one is gone): nothing to do, so a
  second rollback of the same run writes nothing;
- **as the run left it**: rolled back. An object the run created is deleted (a CA policy stays restorable
  from Entra's deleted items for 30 days); an object it updated gets its before fields back;
- **anything else** (someone changed it since the run): **kept** as it is, with the fields that moved named.
  The rest is still rolled back, like a stale plan per object rather than for the whole run, so a changed
  CA policy never blocks putting the passkey method back.

A strength the run created is deleted only when no CA policy still references it after the rollback (a kept
policy, or one created by someone else, keeps it). Writes run in reverse apply order: CA policies, the
strength, then the FIDO2 configuration. Narrowing is spelled out as for an apply: AAGUIDs the method or the
strength stops accepting (evaluated against registered passkeys) and a CA policy restored to `enabled`.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.policy.aaguids import aaguid_key
from shared.policy.current import (
    COMBINATION_ODATA_TYPE,
    FIDO2_ODATA_TYPE,
    StrengthView,
    as_list,
    effective_allowed_aaguids,
    method_summary,
    read_fido2,
    strip_volatile,
)
from shared.policy.document import canonical_sha256
from shared.policy.plan import apply_patch_locally
from shared.policy.plan_model import AREA_CA, AREA_METHOD, AREA_STRENGTH, Issue, Narrowing, Plan

FIDO2_FIELDS = ("state", "isSelfServiceRegistrationAllowed", "isAttestationEnforced", "keyRestrictions",
                "includeTargets", "excludeTargets", "passkeyProfiles", "defaultPasskeyProfile")
#: In a tenant with passkey profiles Graph returns these as a mirror of the default profile; writing them there
#: is deprecated (refused or ignored), so a rollback restores the profiles and leaves the mirror to follow.
LEGACY_MIRROR = ("isAttestationEnforced", "keyRestrictions")
CA_FIELDS = ("displayName", "state", "conditions", "grantControls", "sessionControls")
STRENGTH_OPS = ("create_strength", "update_strength", "update_strength_combinations",
                "create_combination_configuration", "update_combination_configuration")
CA_OPS = ("create_ca_policy", "update_ca_policy")
ID_FIELDS = ("strengthId", "configurationId", "policyId")
DELETED = "(deleted)"


@dataclass(frozen=True)
class RollbackRow:
    """One field the rollback changes: its area, the object (by name), the value now and after."""

    area: str
    object: str
    field: str
    before: Any
    after: Any


@dataclass(frozen=True)
class KeptRow:
    """An object the run changed that the rollback leaves as it is, and why."""

    area: str
    object: str
    reason: str


@dataclass
class RollbackPlan:
    """What a rollback would write (`plan`, sent through the apply path) and the rows people read."""

    plan: Plan
    changed: list[RollbackRow] = field(default_factory=list)
    kept: list[KeptRow] = field(default_factory=list)


# --- normalised views: the fields a rollback compares and restores ------------------------------------
def fido2_fields(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields a rollback restores; in a tenant with passkey profiles, without the legacy mirror."""
    if raw is None:
        return {}
    skip = LEGACY_MIRROR if raw.get("passkeyProfiles") else ()
    return {k: copy.deepcopy(raw[k]) for k in FIDO2_FIELDS if k in raw and k not in skip}


def strength_fields(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """None for an absent strength; combination configurations by id with AAGUIDs as a set."""
    if raw is None:
        return None
    view = StrengthView.from_raw(raw)
    configs: list[dict[str, Any]] = sorted(({"id": str(c.get("id", "")).lower(),
                       "appliesToCombinations": sorted(str(a) for a in c.get("appliesToCombinations") or []),
                       "allowedAAGUIDs": sorted({aaguid_key(str(a)) for a in c.get("allowedAAGUIDs") or []})}
                      for c in view.combination_configurations), key=lambda c: str(c["id"]))
    return {"displayName": view.display_name, "description": view.description,
            "allowedCombinations": sorted(view.allowed_combinations), "combinationConfigurations": configs}


def ca_fields(raw: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """None for an absent policy; the strength reference by id only (a GET expands it to the whole strength)."""
    if raw is None:
        return None
    data = strip_volatile(dict(raw))
    out = {k: copy.deepcopy(data.get(k)) for k in CA_FIELDS}
    grant = out.get("grantControls")
    if isinstance(grant, dict) and isinstance(grant.get("authenticationStrength"), dict):
        grant["authenticationStrength"] = {"id": str(grant["authenticationStrength"].get("id", "")).lower()}
    return out


def _strength_ref(ca: Mapping[str, Any] | None) -> str | None:
    grant = (ca or {}).get("grantControls")
    ref = grant.get("authenticationStrength") if isinstance(grant, dict) else None
    return str(ref["id"]).lower() if isinstance(ref, dict) and ref.get("id") else None


def _by_id(items: object) -> dict[str, dict[str, Any]]:
    return {str(i.get("id", "")).lower(): i for i in as_list(items) if i.get("id")}


def _differing(a: Any, b: Any, path: str = "") -> list[str]:
    """The dotted paths where two values differ, into nested objects (e.g. `conditions.users.includeUsers`)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return [p for k in sorted({*a, *b}) for p in _differing(a.get(k), b.get(k), f"{path}.{k}" if path else k)]
    return [path or "(the object itself)"] if a != b else []


def _name(*objs: Mapping[str, Any] | None) -> str:
    for obj in objs:
        if obj is not None and obj.get("displayName"):
            return str(obj["displayName"])
    return "(unnamed)"


def _touched(writes: Sequence[Mapping[str, Any]], ops: Sequence[str]) -> tuple[set[str], set[str]]:
    """Display names (casefolded) and ids the run's writes of these kinds aimed at.

    Ids come from the write's `strengthId`/`configurationId`/`policyId`, and from the segments of its `path`,
    which is all that run records from before those fields existed carry."""
    names: set[str] = set()
    ids: set[str] = set()
    for w in writes:
        if w.get("op") in ops:
            names.add(str(w.get("target", "")).casefold())
            ids.update(str(w[key]).lower() for key in ID_FIELDS if w.get(key))
            ids.update(part.lower() for part in str(w.get("path", "")).split("/") if part)
            if w.get("createdId"):
                ids.add(str(w["createdId"]).lower())
    return names, ids


def strengths_touched(run: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names (casefolded) and ids of the strengths an apply run wrote: whose configurations a rollback reads."""
    return _touched(_run_writes(run), STRENGTH_OPS)


def _run_writes(run: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The writes the run planned (with paths and targets) and those it sent (with created ids)."""
    return [*((run.get("plan") or {}).get("writes") or []), *(run.get("writes") or [])]


def _candidates(before: object, after: object, writes: Sequence[Mapping[str, Any]], ops: Sequence[str],
                fields: Any) -> list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]:
    """(id, before raw, after raw) of every object the run's writes touched that differs across the run."""
    names, ids = _touched(writes, ops)
    b, a = _by_id(before), _by_id(after)
    out = []
    for oid in sorted({*b, *a}):
        then, now = b.get(oid), a.get(oid)
        aimed = oid in ids or any(str(o.get("displayName", "")).casefold() in names for o in (then, now) if o)
        if aimed and fields(then) != fields(now):
            out.append((oid, then, now))
    return out


# --- the plan -------------------------------------------------------------------------------------------
def build_rollback(run: Mapping[str, Any], fido2_now: Mapping[str, Any], strengths_now: object,
                   ca_now: object) -> RollbackPlan:
    """The rollback of one apply run against the tenant as read now (see the module docstring)."""
    before, after = run.get("before") or {}, run.get("after") or {}
    writes = _run_writes(run)
    out = RollbackPlan(plan=Plan(mode="rollback", state_hash="", desired_hash="rollback"))
    if not isinstance(run.get("after"), dict):
        return out  # the run finished before writing anything (no-op, queued, refused): nothing to undo
    current_ca = _by_id(ca_now)
    deleted_ca, restored_refs = _roll_back_ca(out, before, after, writes, current_ca)
    _roll_back_strengths(out, before, after, writes, _by_id(strengths_now),
                         {pid: restored_refs.get(pid, _strength_ref(ca_fields(p)))
                          for pid, p in current_ca.items() if pid not in deleted_ca}, current_ca)
    fido2_then = before.get("fido2")
    if isinstance(fido2_then, dict) and any(w.get("op") == "patch_fido2" for w in writes):
        _restore_fido2(out, fido2_then, after.get("fido2"), fido2_now)
    return out


def _roll_back_ca(out: RollbackPlan, before: Mapping[str, Any], after: Mapping[str, Any],
                  writes: Sequence[Mapping[str, Any]], current_ca: Mapping[str, dict[str, Any]]
                  ) -> tuple[set[str], dict[str, str | None]]:
    """Each CA policy the run changed: deleted, restored or kept. Returns the ids deleted and, for each
    policy restored, the strength it references afterwards."""
    deleted_ca: set[str] = set()
    restored_refs: dict[str, str | None] = {}
    for oid, then, left in _candidates(before.get("conditionalAccess"), after.get("conditionalAccess"), writes,
                                       CA_OPS, ca_fields):
        now = current_ca.get(oid)
        name = _name(left, then, now)
        if ca_fields(now) == ca_fields(then):
            continue
        if now is None or ca_fields(now) != ca_fields(left):
            moved = ", ".join(_differing(ca_fields(now), ca_fields(left))) if now else "it was deleted"
            out.kept.append(KeptRow(AREA_CA, name, f"changed since the run ({moved}); not rolled back"))
            continue
        if then is None:
            deleted_ca.add(oid)
            _delete(out, AREA_CA, name, "delete_ca_policy", {"policyId": now["id"]}, f"exists ({now.get('state')})")
            if now.get("state") == "enabled":
                out.plan.warnings.append(Issue("ca_enforcement_removed", f"the rollback deletes enforced CA "
                                               f"policy {name!r}: its requirement stops applying"))
            continue
        if left is None:
            out.kept.append(KeptRow(AREA_CA, name, "the run deleted it; a rollback cannot recreate it"))
            continue
        restored_refs[oid] = _strength_ref(ca_fields(then))
        _restore_ca(out, name, now, then)
    return deleted_ca, restored_refs


def _roll_back_strengths(out: RollbackPlan, before: Mapping[str, Any], after: Mapping[str, Any],
                         writes: Sequence[Mapping[str, Any]], current_strengths: Mapping[str, dict[str, Any]],
                         refs_after: Mapping[str, str | None], current_ca: Mapping[str, dict[str, Any]]) -> None:
    """Each strength the run changed: deleted (unless a CA policy still references it after the rollback,
    `refs_after`: policy id -> strength id), restored or kept."""
    for oid, then, left in _candidates(before.get("strengths"), after.get("strengths"), writes, STRENGTH_OPS,
                                       strength_fields):
        now = current_strengths.get(oid)
        name = _name(left, then, now)
        if strength_fields(now) == strength_fields(then):
            continue
        if now is None or strength_fields(now) != strength_fields(left):
            moved = ", ".join(_differing(strength_fields(now), strength_fields(left))) if now else "it was deleted"
            out.kept.append(KeptRow(AREA_STRENGTH, name, f"changed since the run ({moved}); not rolled back"))
            continue
        if then is None:
            users = [_name(current_ca[pid]) for pid, ref in refs_after.items() if ref == oid]
            if users:
                out.kept.append(KeptRow(AREA_STRENGTH, name, "still referenced by Conditional Access polic(ies) "
                                        f"{', '.join(sorted(users))}; not deleted"))
                continue
            _delete(out, AREA_STRENGTH, name, "delete_strength", {"strengthId": now["id"]}, "exists")
            continue
        if left is None:
            out.kept.append(KeptRow(AREA_STRENGTH, name, "the run deleted it; a rollback cannot recreate it"))
            continue
        _restore_strength(out, name, now, then)


def _delete(out: RollbackPlan, area: str, name: str, op: str, ids: dict[str, str], was: Any) -> None:
    out.plan.writes.append({"op": op, "target": name, **ids, "body": {}})
    out.changed.append(RollbackRow(area, name, "(policy)", was, DELETED))


def _restore_ca(out: RollbackPlan, name: str, now: Mapping[str, Any], then: Mapping[str, Any]) -> None:
    want, have = ca_fields(then) or {}, ca_fields(now) or {}
    body = {k: copy.deepcopy(want[k]) for k in CA_FIELDS if want.get(k) != have.get(k) and want.get(k) is not None}
    if not body:
        return
    out.plan.writes.append({"op": "update_ca_policy", "target": name, "policyId": now["id"], "body": body})
    for key in body:
        out.changed.append(RollbackRow(AREA_CA, name, key, have.get(key), want[key]))
    if want.get("state") == "enabled":
        out.plan.narrowing.append(Narrowing(
            "ca_enforced", f"the rollback enforces CA policy {name!r} with its earlier settings: users without "
            "a passkey it accepts may lose access to the included applications", evaluable=False))


def _restore_strength(out: RollbackPlan, name: str, now: Mapping[str, Any], then: Mapping[str, Any]) -> None:
    want, have = strength_fields(then) or {}, strength_fields(now) or {}
    sid = now["id"]
    body = {k: want[k] for k in ("displayName", "description") if want[k] != have[k] and want[k] is not None}
    if body:
        out.plan.writes.append({"op": "update_strength", "target": name, "strengthId": sid, "body": body})
    for key in body:
        out.changed.append(RollbackRow(AREA_STRENGTH, name, key, have[key], want[key]))
    then_configs = {c["id"]: c for c in want["combinationConfigurations"]}
    for config in have["combinationConfigurations"]:
        earlier = then_configs.get(config["id"])
        field_ = "combinationConfigurations[fido2].allowedAAGUIDs"
        if earlier is None:
            out.plan.writes.append({"op": "delete_combination_configuration", "target": name, "strengthId": sid,
                                    "configurationId": config["id"], "body": {}})
            out.changed.append(RollbackRow(AREA_STRENGTH, name, field_, config["allowedAAGUIDs"], DELETED))
        elif earlier["allowedAAGUIDs"] != config["allowedAAGUIDs"]:
            out.plan.writes.append({"op": "update_combination_configuration", "target": name, "strengthId": sid,
                                    "configurationId": config["id"], "body": {"@odata.type": COMBINATION_ODATA_TYPE,
                                             "allowedAAGUIDs": earlier["allowedAAGUIDs"]}})
            out.changed.append(RollbackRow(AREA_STRENGTH, name, field_, config["allowedAAGUIDs"],
                                           earlier["allowedAAGUIDs"]))
    if want["allowedCombinations"] != have["allowedCombinations"]:
        raw = [str(c) for c in then.get("allowedCombinations") or []]
        out.plan.writes.append({"op": "update_strength_combinations", "target": name, "strengthId": sid,
                                "body": {"allowedCombinations": raw}})
        out.changed.append(RollbackRow(AREA_STRENGTH, name, "allowedCombinations", have["allowedCombinations"], raw))
    now_view, then_view = StrengthView.from_raw(now), StrengthView.from_raw(then)
    out.plan.strength_before = {"acceptsFido2": "fido2" in now_view.allowed_combinations,
                                "allowedAaguids": now_view.allowed_aaguids}
    out.plan.strength_after = {"acceptsFido2": "fido2" in then_view.allowed_combinations,
                               "allowedAaguids": then_view.allowed_aaguids}
    lost = sorted(set(now_view.allowed_aaguids or []) - set(then_view.allowed_aaguids or [])) \
        if then_view.allowed_aaguids is not None else []
    if lost:
        out.plan.narrowing.append(Narrowing("rollback", f"the strength {name!r} stops accepting {', '.join(lost)}",
                                            tuple(lost)))


def _restore_fido2(out: RollbackPlan, then: Mapping[str, Any], left: Mapping[str, Any] | None,
                   now: Mapping[str, Any]) -> None:
    want, have = fido2_fields(then), fido2_fields(now)
    have_then = {k: have.get(k) for k in want}
    if have_then == want:
        return
    if left is not None and have_then != {k: fido2_fields(left).get(k) for k in want}:
        moved = [k for k in want if have.get(k) != fido2_fields(left).get(k)]
        out.kept.append(KeptRow(AREA_METHOD, "fido2", f"changed since the run ({', '.join(moved)}); not rolled back"))
        return
    body: dict[str, Any] = {"@odata.type": FIDO2_ODATA_TYPE}
    for key, value in want.items():
        if have.get(key) != value:
            body[key] = copy.deepcopy(value)
            out.changed.append(RollbackRow(AREA_METHOD, "fido2", key, have.get(key), value))
    out.plan.writes.append({"op": "patch_fido2", "target": "fido2", "body": body})
    now_view, then_view = read_fido2(now), read_fido2(apply_patch_locally(now, body))
    lost = sorted(set(effective_allowed_aaguids(now_view) or []) - set(effective_allowed_aaguids(then_view) or []))
    if lost:
        out.plan.narrowing.append(Narrowing("rollback", f"the rollback stops allowing {', '.join(lost)}",
                                            tuple(lost)))
    if now_view.state == "enabled" and then_view.state != "enabled":
        out.plan.narrowing.append(Narrowing("rollback", "the rollback disables the passkey method"))
    out.plan.mode = now_view.mode
    out.plan.method_before, out.plan.method_after = method_summary(now_view), method_summary(then_view)


def state_hash_of(fido2: Mapping[str, Any], strengths: object, ca: object) -> str:
    """A hash of the state a rollback was planned from, for its run record."""
    return canonical_sha256({"fido2": strip_volatile(dict(fido2)), "strengths": strip_volatile(as_list(strengths)),
                             "ca": strip_volatile(as_list(ca))})


# --- for people ----------------------------------------------------------------------------------------
def rollback_to_json(made: RollbackPlan) -> dict[str, Any]:
    return {"changed": [{"area": r.area, "object": r.object, "field": r.field, "before": r.before, "after": r.after}
                        for r in made.changed],
            "kept": [{"area": k.area, "object": k.object, "reason": k.reason} for k in made.kept]}
