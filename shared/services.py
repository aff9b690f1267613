"""The composition root: settings, the Graph gateway and the state store, built lazily and cached.

Functions and the CLI call `get_services()`; nothing is built at import time (cold start counts every
import). The local dev host and the tests build `Services` from their own `Settings` and install them
with `use_services()`, which is also how several tenants could be served later.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
    health: HealthCache = field(default_factory=HealthCache)  # the process's cached health probe

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        from shared.graph.gateway import GraphGateway
        from shared.state import StateStore

        return cls(settings=settings, graph=GraphGateway(settings), store=StateStore.from_settings(settings))

    async def close(self) -> None:
        await self.graph.close()
        await self.store.close()


_current: Services | None = None


def get_services() -> Services:
    """The process's services, built from the environment on first use."""
    global _current
    if _current is None:
        from shared.telemetry import configure

        settings = Settings.from_env(os.environ)
        configure(settings)
        _current = Services.from_settings(settings)
    return _current


def use_services(services: Services | None) -> None:
    """Install (or with None, forget) the services every entry point uses."""
    global _current
    _current = services
