"""The plan as stored JSON: `plan_to_json` (camelCase, a format `version`, each write with the Graph method
and path it becomes) and `plan_from_json` (a malformed document is an InputError naming the field)."""
from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from shared.errors import InputError
from shared.graph.policy_paths import write_request
from shared.policy.plan_model import WRITE_OPS, ChangeRow, Issue, LockoutRow, Narrowing, Plan

PLAN_FORMAT_VERSION = 1


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


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


def _malformed(field_: str, problem: str) -> InputError:
    return InputError(f"stored plan is malformed: {field_}: {problem}", detail=[{"field": field_, "problem": problem}])


class _StoredPlan:
    """Typed reads of a stored plan's fields, each refusing a wrong shape with the field's name."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def items(self, key: str) -> list[dict[str, Any]]:
        value = self.doc.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise _malformed(key, "must be an array of objects")
        return value

    def rows(self, key: str, build: Callable[[dict[str, Any]], Any]) -> list[Any]:
        out = []
        for i, item in enumerate(self.items(key)):
            try:
                out.append(build(item))
            except KeyError as exc:
                raise _malformed(f"{key}[{i}].{exc.args[0]}", "required field missing") from None
        return out

    def text(self, key: str) -> str:
        value = self.doc.get(key)
        if not isinstance(value, str):
            raise _malformed(key, "must be a string")
        return value

    def opt_dict(self, key: str) -> dict[str, Any] | None:
        value = self.doc.get(key)
        if value is not None and not isinstance(value, dict):
            raise _malformed(key, "must be an object or null")
        return copy.deepcopy(value)

    def strings(self, key: str) -> dict[str, str]:
        value = self.doc.get(key, {})
        if not isinstance(value, dict):
            raise _malformed(key, "must be an object")
        return {str(k): str(v) for k, v in value.items()}

    def writes(self) -> list[dict[str, Any]]:
        writes = self.items("writes")
        for i, w in enumerate(writes):
            if w.get("op") not in WRITE_OPS:
                raise _malformed(f"writes[{i}].op", f"unknown op {w.get('op')!r}")
            if not isinstance(w.get("body"), dict):
                raise _malformed(f"writes[{i}]", "needs an object body")
        return [write_from_json(w) for w in writes]


def plan_from_json(doc: object) -> Plan:
    """Load a stored plan; a malformed document is an `InputError` naming the field."""
    if not isinstance(doc, dict):
        raise _malformed("(plan)", "must be an object")
    if doc.get("version") != PLAN_FORMAT_VERSION:
        raise _malformed("version", f"unsupported plan format {doc.get('version')!r}")
    stored = _StoredPlan(doc)
    writes, names, labels = stored.writes(), stored.strings("aaguidNames"), stored.strings("labels")
    return Plan(
        mode=stored.text("mode"), state_hash=stored.text("stateHash"), desired_hash=stored.text("desiredHash"),
        changes=stored.rows("changes", lambda c: ChangeRow(str(c["area"]), str(c["field"]), c.get("before"),
                                                           c.get("after"), str(c.get("note", "")))),
        writes=writes,
        warnings=stored.rows("warnings", lambda i: Issue(str(i["code"]), str(i["message"]))),
        errors=stored.rows("errors", lambda i: Issue(str(i["code"]), str(i["message"]))),
        narrowing=stored.rows("narrowing", lambda n: Narrowing(
            str(n["kind"]), str(n["detail"]), tuple(str(a) for a in _list(n.get("aaguids"))),
            bool(n.get("evaluable", True)))),
        lockout=stored.rows("lockout", lambda r: LockoutRow(
            str(r["userId"]), r.get("upn"), r.get("passkeyId"), str(r["aaguid"]), str(r.get("name", r["aaguid"])),
            r.get("model"), str(r.get("scope", "method")))),
        lockout_evaluated=doc.get("lockoutEvaluated") is True,
        aaguid_names=names,
        profile=stored.opt_dict("profile"), method_before=stored.opt_dict("methodBefore"),
        method_after=stored.opt_dict("methodAfter"), strength_before=stored.opt_dict("strengthBefore"),
        strength_after=stored.opt_dict("strengthAfter"),
        unexcluded_ca=[str(n) for n in _list(doc.get("unexcludedEnforcedPolicies"))],
        labels=labels,
    )
