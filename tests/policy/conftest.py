"""The policy use cases' stack: the product's own Services against a fresh Graph simulator and Azurite."""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from graphsim.launcher import Simulator, start_simulator
from shared.services import Services
from tests.e2e.stack import tenant, user


@pytest.fixture
async def use_case_stack(stack_factory: Any) -> AsyncIterator[Callable[..., Any]]:
    """`await build(tenant_doc=None, **env) -> (Services, Simulator)`; by default a tenant of three users with a
    security key each."""
    sims: list[Simulator] = []

    async def build(tenant_doc: dict[str, Any] | None = None, **env: str) -> tuple[Services, Simulator]:
        sim = start_simulator(tenant_doc or tenant([user(1), user(2), user(3)]))
        sims.append(sim)
        return await stack_factory(sim, **env), sim

    yield build
    for sim in sims:
        sim.stop()
