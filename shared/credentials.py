"""Who signs in: the app's managed identity in Azure, the administrator's own sign-in on their machine.

The functions run as the app's one user-assigned managed identity. `python -m shared` runs in an
administrator's shell, where no managed identity exists: it signs in as that administrator (Azure CLI, azd,
PowerShell, environment variables), for Graph and for identity-based storage alike.
"""
from __future__ import annotations

from typing import Any


def administrator_credential() -> Any:
    """The administrator's own sign-in (`az login` and friends); never a managed identity."""
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential(exclude_managed_identity_credential=True)
