"""The composition root: settings, the Graph gateway and the state store, built lazily and cached.

Functions and the CLI call `get_services()`; nothing is built at import time (cold start counts every
import). The local dev host and the tests build `Services` from their own `Settings` and install them
with `use_services()`, which is also how several tenants could be served later.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.config import Settings
from shared.health import HealthCache

if TYPE_CHECKING:
    from shared.graph.gateway import GraphGateway
    from shared.state import StateStore


@dataclass
class Services:
    settings: Settings
    graph: GraphGateway
    store: StateStore
    credential: Any = None  # the administrator's sign-in the CLI created (closed with the services)
    health: HealthCache = field(default_factory=HealthCache)  # the process's cached health probe

    @classmethod
    def from_settings(cls, settings: Settings, *, administrator: bool = False) -> Services:
        """The services for `settings`; `administrator` signs in as the person at the keyboard (the CLI)
        instead of the app's managed identity, for Graph and for identity-based storage."""
        from shared.graph.gateway import GraphGateway
        from shared.pace_board import CALLS_BOARD, PaceBoard
        from shared.state import StateStore

        if not administrator:
            graph, store, credential = GraphGateway(settings), StateStore.from_settings(settings), None
        else:
            from shared.credentials import administrator_credential
            from shared.graph.auth import build_auth_provider

            credential = administrator_credential()
            graph = GraphGateway(settings, auth_provider=build_auth_provider(settings, credential=credential))
            store = StateStore.from_settings(settings,
                                             credential=credential if settings.storage.uses_identity else None)
        # One Graph budget across the app's instances: the RU pace and the passkey reads' call pace
        # (only once the tenant is confirmed: a process answering for the wrong tenant writes nothing)
        graph.budget.peer = PaceBoard(store.checkpoints, ready=lambda: graph.tenant_confirmed).sync
        graph.auth_pace.peer = PaceBoard(store.checkpoints, name=CALLS_BOARD,
                                         ready=lambda: graph.tenant_confirmed).sync
        return cls(settings=settings, graph=graph, store=store, credential=credential)

    async def close(self) -> None:
        await self.graph.close()
        await self.store.close()
        if self.credential is not None:
            await self.credential.close()


_current: Services | None = None


def get_services(*, administrator: bool = False) -> Services:
    """The process's services, built from the environment on first use (`administrator`: see
    `Services.from_settings`; the CLI passes it)."""
    global _current
    if _current is None:
        from shared.telemetry import configure

        settings = Settings.from_env(os.environ)
        configure(settings)
        _current = Services.from_settings(settings, administrator=administrator)
    return _current


def use_services(services: Services | None) -> None:
    """Install (or with None, forget) the services every entry point uses."""
    global _current
    _current = services
