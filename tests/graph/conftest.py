"""The graph adapter tests' one gateway fixture: the product's GraphGateway pointed at the test module's own
simulator (each module defines `sim`, the tenant it needs)."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from graphsim.launcher import Simulator
from shared.graph.gateway import GraphGateway
from tests.graph.users_tenant import gateway_for


@pytest.fixture
async def graph(sim: Simulator) -> AsyncIterator[GraphGateway]:
    gateway = gateway_for(sim)
    try:
        yield gateway
    finally:
        await gateway.close()
