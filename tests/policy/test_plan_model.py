"""What a plan says about itself: empty when it writes nothing, blocked by any error, and when applying it needs
a person's acceptance (who may be locked out, or a narrowing nobody can evaluate) or the emergency acceptance
(an enforced CA policy that excludes no emergency-access account)."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from shared.policy import plan_model
from shared.policy.plan_model import (
    STRENGTH_ID_PLACEHOLDER,
    WRITE_OPS,
    ChangeRow,
    Issue,
    LockoutRow,
    Narrowing,
    Plan,
)
from tests.policy.policy_factories import YUBIKEY

#: A narrowing `lockout_impact` can evaluate (AAGUIDs dropped from the method), and one it cannot (a CA policy
#: enforced: who lacks an approved passkey is not in the plan's reach).
REMOVED_KEY = Narrowing("aaguids_removed", "YubiKey 5 stops working", (YUBIKEY,))
CA_ENFORCED = Narrowing("ca_enforced", "CA policy 'Require passkey' is enforced", evaluable=False)
LOCKED_OUT = LockoutRow(user_id="u1", upn="u1@example.com", passkey_id="p1", aaguid=YUBIKEY, name="YubiKey 5",
                        model=None)


def plan(**fields: Any) -> Plan:
    return Plan(mode="legacy", state_hash="s", desired_hash="d", **fields)


def test_a_plan_without_writes_is_empty_whatever_it_reports() -> None:
    """`empty` is about writes only: changes, warnings or narrowing without a write still leave nothing to do."""
    assert plan().empty
    assert plan(changes=[ChangeRow("passkeyMethod", "state", "enabled", "enabled")],
                warnings=[Issue("strength_many_configs", "two configurations")]).empty
    assert not plan(writes=[{"op": "patch_fido2", "target": "fido2", "body": {}}]).empty


def test_any_error_blocks_and_warnings_do_not() -> None:
    """One error forbids applying; warnings never do."""
    assert not plan(warnings=[Issue("w", "a warning")]).blocked
    assert plan(errors=[Issue("profile_not_found", "no such profile")]).blocked


@pytest.mark.parametrize(("fields", "needs_evaluation", "requires"), [
    ({}, False, False),
    ({"narrowing": [REMOVED_KEY]}, True, True),  # somebody may be hit: not yet known who
    ({"narrowing": [REMOVED_KEY], "lockout_evaluated": True}, True, False),  # evaluated: nobody is hit
    ({"narrowing": [REMOVED_KEY], "lockout_evaluated": True, "lockout": [LOCKED_OUT]}, True, True),
    ({"narrowing": [CA_ENFORCED]}, False, True),  # nobody can say who is hit
    ({"narrowing": [CA_ENFORCED], "lockout_evaluated": True}, False, True),
    ({"narrowing": [CA_ENFORCED, REMOVED_KEY], "lockout_evaluated": True}, True, True),
    ({"lockout": [LOCKED_OUT]}, False, True),
], ids=["nothing-narrowed", "not-yet-evaluated", "evaluated-nobody", "evaluated-somebody", "unevaluable",
        "unevaluable-after-evaluation", "mixed", "lockout-rows"])
def test_acceptance_is_required_while_somebody_may_be_locked_out(fields: dict[str, Any], needs_evaluation: bool,
                                                                 requires: bool) -> None:
    """Acceptance is needed for lockout rows, for a narrowing nobody can evaluate, and for an evaluable one until
    its lockout impact has been read; an evaluated narrowing that hits nobody needs none."""
    made = plan(**fields)
    assert made.needs_lockout_evaluation is needs_evaluation
    assert made.requires_acceptance is requires


def test_the_emergency_acceptance_is_for_unexcluded_enforced_ca_policies_only() -> None:
    """Only an enforced CA policy without an emergency-access exclusion asks for the separate acceptance; the
    ordinary lockout acceptance has nothing to do with it."""
    assert not plan(narrowing=[CA_ENFORCED]).requires_emergency_acceptance
    unexcluded = plan(unexcluded_ca=["Require passkey"])
    assert unexcluded.requires_emergency_acceptance and not unexcluded.requires_acceptance


def test_plan_rows_cannot_be_changed_once_made() -> None:
    """Changes, issues, narrowing and lockout rows are frozen: what was shown is what gets stored."""
    for row in (ChangeRow("a", "f", 1, 2), Issue("c", "m"), REMOVED_KEY, LOCKED_OUT):
        field = dataclasses.fields(row)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(row, field, "changed")


def test_every_write_op_is_documented_with_its_target() -> None:
    """The module's own list of writes and WRITE_OPS name the same operations, so the docs do not drift."""
    doc = plan_model.__doc__ or ""
    documented = {line.split('"op": "')[1].split('"')[0] for line in doc.splitlines() if '"op": "' in line}
    assert documented == set(WRITE_OPS) and len(WRITE_OPS) == len(set(WRITE_OPS))
    assert STRENGTH_ID_PLACEHOLDER in doc
