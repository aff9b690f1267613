"""Graph tokens are requested for TENANT_ID: kiota's real Azure Identity provider passes it on every get_token."""
from __future__ import annotations

from typing import Any

import pytest
from azure.core.credentials import AccessToken

from shared.config import Settings
from shared.graph.auth import build_auth_provider

TENANT = "22222222-3333-4444-8555-666666666666"


class RecordingCredential:
    """An async credential that hands out one token and records what each get_token asked for."""

    def __init__(self) -> None:
        self.requests: list[tuple[tuple[str, ...], dict[str, Any]]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.requests.append((scopes, kwargs))
        return AccessToken("header.payload.signature", 4_102_444_800)

    async def close(self) -> None:
        return None


async def test_graph_tokens_are_requested_for_the_configured_tenant() -> None:
    """The administrator's credential is asked for a Graph token of TENANT_ID, not of its home tenant."""
    credential = RecordingCredential()
    settings = Settings.from_env({"TENANT_ID": TENANT, "STATE_STORAGE": "UseDevelopmentStorage=true"})
    provider: Any = build_auth_provider(settings, credential=credential)
    token = await provider.access_token_provider.get_authorization_token("https://graph.microsoft.com/v1.0/users")
    assert token == "header.payload.signature"
    [(scopes, kwargs)] = credential.requests
    assert scopes == ("https://graph.microsoft.com/.default",) and kwargs.get("tenant_id") == TENANT


class FailingCredential(RecordingCredential):
    """An administrator who has not run `az login`: every token request fails."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.identity import CredentialUnavailableError

        raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token")


async def test_a_failed_sign_in_during_the_tenant_check_suggests_az_login() -> None:
    """The tenant check is the first thing to ask for a token: its failure is graphSignInFailed with `az login`."""
    from shared.errors import GraphSignInFailed
    from shared.graph.gateway import GraphGateway

    settings = Settings.from_env({"TENANT_ID": TENANT, "STATE_STORAGE": "UseDevelopmentStorage=true"})
    gateway = GraphGateway(settings, auth_provider=build_auth_provider(settings, credential=FailingCredential()))
    try:
        with pytest.raises(GraphSignInFailed) as caught:
            await gateway.get_json("/users")
        assert "az login" in caught.value.message and gateway.tenant_confirmed is False
    finally:
        await gateway.close()
