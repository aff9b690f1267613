"""The tenant check comes before anything else is asked of Graph: a sign-in that fails there says how to sign in.
(That tokens are requested for TENANT_ID at all is tests/graph/test_auth.py's.)"""
from __future__ import annotations

from typing import Any

import pytest
from azure.core.credentials import AccessToken

from shared.config import Settings
from shared.graph.auth import build_auth_provider

TENANT = "22222222-3333-4444-8555-666666666666"


class FailingCredential:
    """An administrator who has not run `az login`: every token request fails."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        from azure.identity import CredentialUnavailableError

        raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token")

    async def close(self) -> None:
        return None


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
