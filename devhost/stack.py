"""The local stack, built one way for the tests, the benchmarks, `python -m devhost up` and `make demo`.

`loopback(tenant)` starts Azurite and the Graph simulator on free loopback ports (or takes an Azurite the
caller already runs) and stops what it started by PID. `local_stack(tenant)` adds the product on top: the
app settings pointing at both (`stack_settings`, plus the caller's own values; without a `GRAPH_DEV_TOKEN`
of the caller's, the app token of the configured mode, and then the simulator grants opaque tokens nothing,
so every Graph call is checked against real roles), the product's Services
built from them and installed for the functions, and `function_app` served by devhost with its queue
drained. Everything is stopped in reverse order on the way out, also on failure.

    async with local_stack(tenant_doc, settings={"GRAPH_DEV_TOKEN": "dev"}) as stack:
        await verify(stack.services)
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devhost.azurite import Azurite, start_azurite
from devhost.graph_tokens import app_token, mode_roles
from graphsim.launcher import Simulator, start_simulator
from shared.config import Settings
from shared.services import Services, use_services

if TYPE_CHECKING:
    from devhost.host import DevHost


def stack_settings(azurite: Azurite, sim: Simulator, tenant_id: str, **values: str) -> dict[str, str]:
    """The app settings that point the product at this Azurite and simulator; `values` add or override.

    Without a `GRAPH_DEV_TOKEN` of the caller's, the product gets the app token of its configured mode: an
    unsigned JWT carrying exactly the Graph roles infra grants for these settings (devhost/graph_tokens.py)."""
    out = {"TENANT_ID": tenant_id, "GRAPH_BASE_URL": sim.base_url, "STATE_STORAGE": azurite.connection_string,
           **values}
    if "GRAPH_DEV_TOKEN" not in values:
        out["GRAPH_DEV_TOKEN"] = app_token(out["TENANT_ID"], mode_roles(out))
    return out


def tenant_id_of(tenant: dict[str, Any] | Path) -> str:
    """The `tenantId` of a simulator tenant, given as a document or as its file."""
    doc = tenant if isinstance(tenant, dict) else json.loads(Path(tenant).read_text(encoding="utf-8"))
    return str(doc["tenantId"])


@contextlib.contextmanager
def loopback(tenant: dict[str, Any] | Path, *, azurite: Azurite | None = None,
             workdir: Path | None = None) -> Iterator[tuple[Azurite, Simulator]]:
    """(azurite, simulator) for `tenant`; an Azurite passed in is the caller's and stays running. With a
    `workdir`, Azurite's log and the simulator's log go there."""
    owned = azurite is None
    storage = start_azurite(workdir=workdir) if azurite is None else azurite
    try:
        sim = start_simulator(tenant, log_path=None if workdir is None else workdir / "graphsim.log")
        try:
            yield storage, sim
        finally:
            sim.stop()
    finally:
        if owned:
            storage.stop()


@dataclass
class LocalStack:
    """What `local_stack` runs: the two emulators, the product's Services and (when served) the host."""

    azurite: Azurite
    sim: Simulator
    services: Services
    host: DevHost | None
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def tenant_id(self) -> str:
        return self.services.settings.tenant_id


@contextlib.asynccontextmanager
async def local_stack(tenant: dict[str, Any] | Path, *, azurite: Azurite | None = None,
                      settings: Mapping[str, str] | None = None, serve: bool = True, drain: bool = True,
                      port: int = 0, poll_seconds: float = 0.2, ensure_store: bool = False,
                      workdir: Path | None = None) -> AsyncIterator[LocalStack]:
    """The whole product on loopback for `tenant` (see the module docstring).

    `settings` are app settings beside the three `stack_settings` writes; `serve` serves function_app
    through devhost on `port` (0: a free one) with its queue drained every `poll_seconds` unless `drain` is
    off; `ensure_store` creates the tables and queues first, as a deployment does.
    """
    processes = loopback(tenant, azurite=azurite, workdir=workdir)
    storage, sim = await asyncio.to_thread(processes.__enter__)
    host: DevHost | None = None
    services: Services | None = None
    try:
        values = stack_settings(storage, sim, tenant_id_of(tenant), **(settings or {}))
        if "GRAPH_DEV_TOKEN" not in (settings or {}):  # the minted JWTs carry the roles: opaque ones get none
            await asyncio.to_thread(sim.configure, opaque_token_roles="none")  # noqa: S106 (a knob, not a secret)
        services = Services.from_settings(Settings.from_env(values))
        use_services(services)
        if ensure_store:
            await services.store.ensure()
        if serve:
            from devhost.host import DevHost  # only a served stack loads the function app and aiohttp

            connection = storage.connection_string
            host = DevHost(queue_client_factory=lambda name: _queue_client(connection, name),
                           poll_seconds=poll_seconds)
            await host.start(port=port, drain=drain)
        yield LocalStack(azurite=storage, sim=sim, services=services, host=host, settings=values)
    finally:
        if host is not None:
            await host.stop()
        if services is not None:
            use_services(None)
            await services.close()
        await asyncio.to_thread(processes.__exit__, None, None, None)


def _queue_client(connection_string: str, name: str) -> Any:
    """An async queue client for devhost's drain (imported here: only a served stack needs it)."""
    from azure.storage.queue.aio import QueueClient

    return QueueClient.from_connection_string(connection_string, name)
