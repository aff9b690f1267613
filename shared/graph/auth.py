"""How the Graph client authenticates.

- In Azure: the app's one user-assigned managed identity (`AZURE_CLIENT_ID`).
- On an admin's machine: `DefaultAzureCredential` (az login, environment, ...).
- Tokens are requested for `TENANT_ID` (`tenant_id` on every `get_token`), and the answering tenant is confirmed
  before the first request (shared/graph/tenant.py).
- Against the local simulator (a loopback `GRAPH_BASE_URL`): the static `GRAPH_DEV_TOKEN`, sent only to
  loopback hosts, so a real token can never reach the simulator and the dev token never leaves the box.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    AuthenticationProvider,
    BaseBearerTokenAuthenticationProvider,
)

from shared.config import Settings, is_loopback_url

GRAPH_SCOPE = "https://graph.microsoft.com/.default"


class StaticTokenProvider(AccessTokenProvider):
    """Hands out one fixed bearer token, and only to the hosts it was given (loopback)."""

    def __init__(self, token: str, hosts: list[str]) -> None:
        self._token = token
        self._validator = AllowedHostsValidator(hosts)

    async def get_authorization_token(self, uri: str, additional_authentication_context: dict[str, Any] | None = None
                                      ) -> str:
        if not is_loopback_url(uri) or not self._validator.is_url_host_valid(uri):
            return ""
        return self._token

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._validator


def app_credential(settings: Settings) -> Any:
    """The app's own sign-in for a real Graph: its managed identity (`AZURE_CLIENT_ID`), else
    DefaultAzureCredential; None for a loopback Graph, which gets the dev token. The caller closes it."""
    if settings.graph_is_local:
        return None
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    return (ManagedIdentityCredential(client_id=settings.azure_client_id) if settings.azure_client_id
            else DefaultAzureCredential())


def build_auth_provider(settings: Settings, *, credential: Any = None) -> AuthenticationProvider:
    """The authentication provider for `settings.graph_base_url`; credentials are created lazily here.

    `credential` is the administrator's sign-in when the CLI runs (see shared/credentials.py); without it,
    the app's managed identity (`AZURE_CLIENT_ID`), else DefaultAzureCredential.
    """
    host = urlparse(settings.graph_base_url).hostname or ""
    if settings.graph_is_local:
        return BaseBearerTokenAuthenticationProvider(StaticTokenProvider(settings.graph_dev_token, [host]))

    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )

    if credential is None:
        credential = app_credential(settings)
    # allowed_hosts pins tokens to Graph's own host; scopes are explicit (graph-contract pitfall 9). The options
    # go to every get_token: tokens are requested for TENANT_ID, not the sign-in's home tenant (a managed
    # identity ignores it; shared/graph/tenant.py then confirms the tenant that answers).
    return AzureIdentityAuthenticationProvider(credential, options={"tenant_id": settings.tenant_id},
                                               scopes=[GRAPH_SCOPE], allowed_hosts=[host])
