"""What a plan is: the changes, writes, issues, narrowing and lockout rows `build_plan` (plan.py) returns.

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

from dataclasses import dataclass, field
from typing import Any

#: Stands for the id of a strength that `create_strength` has yet to create.
STRENGTH_ID_PLACEHOLDER = "{{strength.id}}"

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
