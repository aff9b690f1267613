"""The UPN side's graph adapter tests share this: a small tenant of users for the simulator, and the product's
gateway pointed at it."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphsim.launcher import Simulator, start_simulator
from shared.config import Settings
from shared.graph.gateway import GraphGateway
from tests.e2e.stack import YUBI, tenant, user

#: User 5's UPN holds the characters Entra allows in one (' # ^ ~ !), which a path must encode.
ODD_UPN = "o'neil#5^~!@contoso.example"


def users_tenant() -> dict[str, Any]:
    """Five users: odd ones hold a passkey; user 5 has the `ODD_UPN`."""
    users = [user(n, key=YUBI if n % 2 else None) for n in range(1, 5)]
    users.append({**user(5), "userPrincipalName": ODD_UPN})
    return tenant(users)


def running_users_tenant() -> Iterator[Simulator]:
    """A simulator of `users_tenant()`, for a module-scoped fixture."""
    with start_simulator(users_tenant()) as running:
        yield running


def gateway_for(sim: Simulator) -> GraphGateway:
    """The product's gateway for the simulator's tenant, with the dev token."""
    settings = Settings.from_env({"TENANT_ID": sim.state(users=False)["tenantId"], "STATE_STORAGE": "x",
                                  "GRAPH_BASE_URL": sim.base_url, "GRAPH_DEV_TOKEN": "gw-token"})
    return GraphGateway(settings)
