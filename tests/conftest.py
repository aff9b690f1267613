"""Fixtures shared by every test area: one Azurite per session, the indexed function app, and a way
to build the product's own Services against a simulator and a fresh tenant partition, and the loopback
managed-identity endpoint a deployed app would sign in with, or the `az login` of an administrator.

Each test that needs state gets its own tenant id, so tests share one Azurite without sharing rows
(every storage key starts with the tenant id).

No test may depend on the wall clock, so hypothesis runs without its per-example deadline and without the
"too slow" health check: both time the machine, and a loaded machine would fail a correct property.
"""
from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from devhost.azurite import Azurite, start_azurite
from devhost.graph_tokens import app_token, granted_roles
from devhost.stack import stack_settings
from graphsim.launcher import Simulator
from shared.config import Settings
from shared.services import Services, use_services
from tests.sign_in import OTHER_SIGN_INS, FakeManagedIdentity, install_fake_az

settings.register_profile("no-wall-clock", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("no-wall-clock")


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A real Azurite on free loopback ports, stopped by PID at the end of the session."""
    with start_azurite() as instance:
        yield instance


@pytest.fixture(scope="session")
def functions() -> dict[str, Any]:
    """function_app's functions by name (get_functions() works once per FunctionApp)."""
    from devhost.host import index_functions

    return index_functions()


#: The test stack's webhook secrets: random-looking and 32+ characters, as the app requires of real ones.
CLIENT_STATE = "WizcZFQ02y4ZkG8-fhFNSsqeP6I9AbcO2_hmnJxB"
TICKET_SECRET = "KG88ORtqbEEaJ5Zc3mSaRV-DoZMbgDs4jPJw8yP9"


def new_tenant_id() -> str:
    return str(uuid.uuid4())


#: The app settings every test stack adds to `devhost.stack.stack_settings` (with `app_settings`' token).
TEST_SETTINGS = {"NOTIFICATION_CLIENT_STATE": CLIENT_STATE, "TICKET_WEBHOOK_SECRET": TICKET_SECRET}


def graph_token(tenant_id: str) -> str:
    """The app's Graph token in tests: an app-only JWT for `tenant_id` with exactly the roles infra grants an
    enforce-mode deployment with every option on (stale-passkey removal, application reads), so the simulator
    checks each call the product makes against the documented permissions, as Graph would."""
    return app_token(tenant_id, granted_roles("always", "enforce", "removeStalePasskeys", "readApplications"))


def app_settings(tenant_id: str, **env: str) -> dict[str, str]:
    """TEST_SETTINGS with the tenant's Graph token, and `env` over both."""
    return {**TEST_SETTINGS, "GRAPH_DEV_TOKEN": graph_token(tenant_id), **env}


def make_settings(azurite: Azurite, sim: Simulator, tenant_id: str, **env: str) -> Settings:
    """The product's settings for this stack, as app settings would give them."""
    return Settings.from_env(stack_settings(azurite, sim, tenant_id, **app_settings(tenant_id, **env)))


@pytest.fixture
async def stack_factory(azurite: Azurite) -> AsyncIterator[Any]:
    """`await build(sim, tenant_id=None, **env) -> Services`, installed for the functions; closed after."""
    built: list[Services] = []

    async def build(sim: Simulator, tenant_id: str | None = None, **env: str) -> Services:
        tenant = tenant_id or sim.state(users=False).get("tenantId") or new_tenant_id()
        services = Services.from_settings(make_settings(azurite, sim, tenant, **env))
        built.append(services)
        use_services(services)
        return services

    yield build
    use_services(None)
    for services in built:
        await services.close()


@pytest.fixture
async def managed_identity(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeManagedIdentity]:
    """A managed identity as App Service offers one (on loopback), and no other credential in the environment."""
    endpoint = await FakeManagedIdentity().start()
    for name in OTHER_SIGN_INS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoint.endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", endpoint.header)
    try:
        yield endpoint
    finally:
        await endpoint.stop()


@pytest.fixture
def az_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An administrator who ran `az login`: a stand-in `az` first on PATH; the log of what it was asked for."""
    log = install_fake_az(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


def graph_waits_move_the_clock(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The product's waits for Graph's pace (its RU budgets: Retry-After pauses and refills) move the
    simulator's throttle clock instead of waiting on the wall clock: the product still waits every second
    Graph asked for, in the simulator's time, and a test of a throttled bulk read runs at machine speed with
    Graph's limits untouched. Returns the waits the budgets asked for.

    Every budget of the process reads one virtual clock (the wall clock plus what was skipped). A budget
    computes its wait from that clock just before it sleeps, so a second waiter already sees the first
    one's jump and asks only for what it still lacks: the simulator never refills more than the product
    waited, however many budgets (instances) wait at once."""
    waits: list[float] = []
    skipped = [0.0]
    real = time.monotonic

    def monotonic() -> float:
        return real() + skipped[0]

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if seconds > 0:
            skipped[0] += seconds  # before any await: a waiter running next reads the moved clock
            await asyncio.to_thread(sim.throttle_clock, advance=seconds)
        await asyncio.sleep(0)

    paces_use_clock(monkeypatch, monotonic, sleep)
    return waits


def paces_use_clock(monkeypatch: pytest.MonkeyPatch, monotonic: Any, sleep: Any) -> None:
    """The paces of `shared/graph/budget.py` read `monotonic` and wait with `sleep` (a test's clock); their
    locks and background tasks stay asyncio's."""
    import shared.graph.budget as budget_module

    monkeypatch.setattr(budget_module, "time", SimpleNamespace(monotonic=monotonic))
    monkeypatch.setattr(budget_module, "asyncio", SimpleNamespace(sleep=sleep, Lock=asyncio.Lock, wait=asyncio.wait,
                                                                  ensure_future=asyncio.ensure_future))
