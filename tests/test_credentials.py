"""The administrator's sign-in: the CLI signs in as the person at the keyboard (here a stand-in `az login`) and
never as a managed identity, even on a machine that offers one."""
from __future__ import annotations

from pathlib import Path

from shared.credentials import administrator_credential
from tests.sign_in import MANAGED_IDENTITY_TOKEN, FakeManagedIdentity, resources_asked

SCOPE = "https://graph.microsoft.com/.default"


async def test_the_administrator_signs_in_even_where_a_managed_identity_answers(
        managed_identity: FakeManagedIdentity, az_login: Path) -> None:
    """With both a managed identity and `az login` available, the token is the administrator's (from `az`),
    and the managed identity is never asked."""
    credential = administrator_credential()
    try:
        token = await credential.get_token(SCOPE)
    finally:
        await credential.close()
    assert token.token != MANAGED_IDENTITY_TOKEN and token.token.count(".") == 2
    assert resources_asked(az_login) == ["https://graph.microsoft.com"]
    assert managed_identity.requests == []


async def test_without_the_exclusion_the_managed_identity_would_have_answered(
        managed_identity: FakeManagedIdentity, az_login: Path) -> None:
    """The control for the test above: azure-identity's default chain asks the managed identity before `az`,
    so only the exclusion keeps the CLI from acting as the app."""
    from azure.identity.aio import DefaultAzureCredential

    credential = DefaultAzureCredential()
    try:
        token = await credential.get_token(SCOPE)
    finally:
        await credential.close()
    assert token.token == MANAGED_IDENTITY_TOKEN
    assert [r["resource"] for r in managed_identity.requests] == ["https://graph.microsoft.com"]
    assert resources_asked(az_login) == []
