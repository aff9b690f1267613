"""The rollback use case: it undoes an apply run and only an apply run."""
from __future__ import annotations

import pytest

from shared.errors import InputError
from shared.policy.apply import apply_document
from shared.policy.planning import plan
from shared.policy.rollback import rollback


async def test_an_apply_is_rolled_back_and_a_second_rollback_writes_nothing(use_case_stack):
    """Rolling back an apply restores the tenant; rolling it back again is a no-op."""
    services, sim = await use_case_stack()
    before = sim.state(users=False)["authenticationMethodConfigurations"]["fido2"]["keyRestrictions"]
    applied = await apply_document(services, trigger="test")
    undone = await rollback(services, applied["runId"], accept_lockout=False, trigger="test")
    assert undone["result"] == "rolled-back" and undone["rolledBack"] == applied["runId"]
    assert sim.state(users=False)["authenticationMethodConfigurations"]["fido2"]["keyRestrictions"] == before
    writes = sim.stats()["writes"]
    again = await rollback(services, applied["runId"], accept_lockout=False, trigger="test")
    assert again["result"] == "no-op" and sim.stats()["writes"] == writes


async def test_a_plan_run_is_not_something_to_roll_back(use_case_stack):
    """Naming a plan run is an InputError that points to the runs listing."""
    services, _ = await use_case_stack()
    planned = await plan(services, trigger="test")
    with pytest.raises(InputError, match="plan run"):
        await rollback(services, planned["runId"], accept_lockout=False, trigger="test")
