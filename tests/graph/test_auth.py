"""How the Graph client authenticates: the simulator gets the static dev token and only over loopback; real Graph
gets a token for TENANT_ID from the administrator's sign-in or the app's managed identity, and only Graph's own
host ever receives it."""
from __future__ import annotations

from typing import Any

from azure.core.credentials import AccessToken

from shared.config import Settings
from shared.graph.auth import GRAPH_SCOPE, StaticTokenProvider, build_auth_provider
from tests.sign_in import MANAGED_IDENTITY_TOKEN, FakeManagedIdentity

TENANT = "22222222-3333-4444-8555-666666666666"
APP_IDENTITY = "33333333-4444-4555-8666-777777777777"


class RecordingCredential:
    """An async credential that hands out one token and records what each get_token asked for."""

    def __init__(self) -> None:
        self.requests: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.requests.append((scopes, kwargs))
        return AccessToken("header.payload.signature", 4_102_444_800)

    async def close(self) -> None:
        return None


def settings(**env: str) -> Settings:
    return Settings.from_env({"TENANT_ID": TENANT, "STATE_STORAGE": "UseDevelopmentStorage=true", **env})


async def test_the_dev_token_is_only_ever_sent_to_loopback() -> None:
    """The static dev token goes to the simulator's loopback host and nowhere else."""
    provider = StaticTokenProvider("dev-token", ["127.0.0.1"])
    assert await provider.get_authorization_token("http://127.0.0.1:8400/v1.0/users") == "dev-token"
    assert await provider.get_authorization_token("https://graph.microsoft.com/v1.0/users") == ""
    assert await provider.get_authorization_token("http://localhost:8400/v1.0/users") == ""


async def test_the_dev_token_never_leaves_the_machine_even_when_a_host_is_allowed() -> None:
    """A provider told to serve a remote host still gives it nothing: the dev token is for loopback only."""
    provider = StaticTokenProvider("dev-token", ["graph.microsoft.com"])
    assert await provider.get_authorization_token("https://graph.microsoft.com/v1.0/users") == ""


async def test_a_loopback_graph_gets_the_dev_token_and_never_a_real_one() -> None:
    """Against the simulator the provider hands out GRAPH_DEV_TOKEN, and a credential it is given is never asked,
    so a real token cannot reach the simulator."""
    credential = RecordingCredential()
    provider: Any = build_auth_provider(settings(GRAPH_BASE_URL="http://127.0.0.1:8400/v1.0",
                                                 GRAPH_DEV_TOKEN="simulator-token"), credential=credential)
    tokens = provider.access_token_provider
    assert await tokens.get_authorization_token("http://127.0.0.1:8400/v1.0/users") == "simulator-token"
    assert await tokens.get_authorization_token("https://graph.microsoft.com/v1.0/users") == ""
    assert credential.requests == []


async def test_graph_tokens_are_requested_for_the_configured_tenant() -> None:
    """The administrator's credential is asked for a Graph token of TENANT_ID, not of its home tenant."""
    credential = RecordingCredential()
    provider: Any = build_auth_provider(settings(), credential=credential)
    token = await provider.access_token_provider.get_authorization_token("https://graph.microsoft.com/v1.0/users")
    assert token == "header.payload.signature"
    [(scopes, kwargs)] = credential.requests
    assert scopes == (GRAPH_SCOPE,) and kwargs.get("tenant_id") == TENANT


async def test_a_real_token_goes_only_to_graphs_own_host() -> None:
    """A request to any other host gets no token, and the credential is not even asked for one."""
    credential = RecordingCredential()
    provider: Any = build_auth_provider(settings(), credential=credential)
    assert await provider.access_token_provider.get_authorization_token("https://evil.example/v1.0/users") == ""
    assert credential.requests == []


async def test_in_azure_the_apps_user_assigned_identity_signs_in(managed_identity: FakeManagedIdentity) -> None:
    """Without an administrator's credential and with AZURE_CLIENT_ID set, the token comes from the managed
    identity of that client id, for Graph."""
    provider: Any = build_auth_provider(settings(AZURE_CLIENT_ID=APP_IDENTITY))
    tokens = provider.access_token_provider
    try:
        assert await tokens.get_authorization_token("https://graph.microsoft.com/v1.0/users") == MANAGED_IDENTITY_TOKEN
    finally:
        await tokens._credentials.close()  # kiota keeps the credential private; the test owns its session
    [asked] = managed_identity.requests
    assert asked["client_id"] == APP_IDENTITY and asked["resource"] == "https://graph.microsoft.com"


async def test_a_gateway_closes_the_managed_identity_credential_it_created(
        managed_identity: FakeManagedIdentity, monkeypatch: Any) -> None:
    """The app's gateway signs in with a managed-identity credential it builds itself; closing the gateway
    closes that credential's session too (the CLI's administrator credential is the services' to close)."""
    import azure.identity.aio as identity_aio

    from shared.graph.gateway import GraphGateway

    closed: list[str] = []

    class Watched(identity_aio.ManagedIdentityCredential):
        async def close(self) -> None:
            closed.append("managed identity")
            await super().close()

    monkeypatch.setattr(identity_aio, "ManagedIdentityCredential", Watched)
    gateway = GraphGateway(settings(AZURE_CLIENT_ID=APP_IDENTITY))
    assert await gateway.access_token() == MANAGED_IDENTITY_TOKEN
    await gateway.close()
    assert closed == ["managed identity"]
    await gateway.close()  # a second close closes nothing twice
    assert closed == ["managed identity"]
