"""The composition root: the process's services are built from the environment on first use and then reused, a
test or the dev host installs its own, and the CLI's services sign in as the administrator (for Graph and for
identity-based storage) where the app's sign in as its managed identity."""
from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.config import Settings
from shared.services import Services, get_services, use_services
from tests.sign_in import MANAGED_IDENTITY_TOKEN, FakeManagedIdentity, resources_asked

TENANT = "44444444-5555-4666-8777-888888888888"
APP_IDENTITY = "55555555-6666-4777-8888-999999999999"
STORAGE = "https://storage.azure.com"
GRAPH = "https://graph.microsoft.com"


@pytest.fixture
async def process(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[Services]]:
    """A process whose environment is the app settings (Graph on a loopback port nobody answers), with no services
    installed yet; every Services a test lets it build is closed and forgotten afterwards."""
    for name, value in {"TENANT_ID": TENANT, "STATE_STORAGE": "UseDevelopmentStorage=true",
                        "GRAPH_BASE_URL": "http://127.0.0.1:9/v1.0", "GRAPH_DEV_TOKEN": "dev"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("APPLICATIONINSIGHTS_CONNECTION_STRING", raising=False)
    use_services(None)
    built: list[Services] = []
    yield built
    use_services(None)
    for services in built:
        await services.close()


async def test_the_services_are_built_once_from_the_environment(process: list[Services]) -> None:
    """The first call reads the app settings; later calls get the very same services (one Graph client, one
    store, one health cache per process)."""
    first = get_services()
    process.append(first)
    assert get_services() is first
    assert first.settings.tenant_id == TENANT and first.store.tenant_id == TENANT
    assert first.credential is None  # the app signs in as its managed identity, inside the adapters


async def test_installed_services_are_used_and_forgetting_them_rebuilds(process: list[Services],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`use_services` installs services that every entry point then gets without reading the environment;
    `use_services(None)` forgets them, and the next call builds afresh."""
    mine = Services.from_settings(Settings.from_env({"TENANT_ID": "66666666-7777-4888-8999-aaaaaaaaaaaa",
                                                     "STATE_STORAGE": "UseDevelopmentStorage=true"}))
    process.append(mine)
    use_services(mine)
    monkeypatch.delenv("TENANT_ID")  # would be a settings error if it were read now
    assert get_services() is mine
    monkeypatch.setenv("TENANT_ID", TENANT)
    use_services(None)
    rebuilt = get_services()
    process.append(rebuilt)
    assert rebuilt is not mine and rebuilt.settings.tenant_id == TENANT


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def deployed_settings() -> Settings:
    """The deployed app's settings, as an administrator copies them: real Graph, identity-based storage (on a
    loopback port nobody answers: a token is asked for before any request is sent) and the app's client id."""
    storage = f"https://127.0.0.1:{closed_port()}/devstoreaccount1"
    return Settings.from_env({"TENANT_ID": TENANT, "STATE_STORAGE__tableServiceUri": storage,
                              "STATE_STORAGE__queueServiceUri": storage, "AZURE_CLIENT_ID": APP_IDENTITY})


async def test_the_cli_signs_in_as_the_administrator_for_graph_and_storage(
        managed_identity: FakeManagedIdentity, az_login: Path) -> None:
    """With `administrator`, the Graph token and the storage token both come from the administrator's sign-in,
    and the managed identity (present here, as on a build agent) is never asked."""
    services = Services.from_settings(deployed_settings(), administrator=True)
    try:
        assert services.credential is not None
        graph_token = await services.graph.access_token()
        assert await services.store.ping(within=2.0) is False  # nobody answers; the token was asked for first
    finally:
        await services.close()
    assert graph_token != MANAGED_IDENTITY_TOKEN and graph_token.count(".") == 2
    assert resources_asked(az_login)[:1] == [GRAPH] and STORAGE in resources_asked(az_login)
    assert managed_identity.requests == []


async def test_the_app_signs_in_as_its_managed_identity_for_graph_and_storage(
        managed_identity: FakeManagedIdentity, az_login: Path) -> None:
    """The control: without `administrator` the same settings sign in as the app's user-assigned identity
    (AZURE_CLIENT_ID) for both, and `az` is never run."""
    services = Services.from_settings(deployed_settings())
    try:
        assert services.credential is None
        assert await services.graph.access_token() == MANAGED_IDENTITY_TOKEN
        assert await services.store.ping(within=2.0) is False
    finally:
        await services.close()
    assert {(r["resource"], r.get("client_id")) for r in managed_identity.requests} == {(GRAPH, APP_IDENTITY),
                                                                                        (STORAGE, APP_IDENTITY)}
    assert resources_asked(az_login) == []
