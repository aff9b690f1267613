"""The local stack's Graph tokens: unsigned JWTs shaped like Entra's, so the simulator checks real roles.

Against the loopback simulator the product sends the static `GRAPH_DEV_TOKEN` (shared/graph/auth.py). An
opaque value there grants everything (the simulator's `opaque_token_roles` "all") and skips the product's own
write-permission check, so nothing would show a role the deployment lacks. The local stack therefore mints:

- `app_token`: what the app's managed identity gets in Azure, an app-only token whose `roles` are exactly the
  Graph application permissions infra/graph-permissions.json grants for the configured settings
  (`ENFORCEMENT_MODE` audit or enforce, `REMOVE_STALE_PASSKEYS`; `grantApplicationRead` is an infra parameter
  with no app setting, so `read_applications` asks for it);
- `admin_token`: what `az login` gives an administrator at the CLI, a delegated token whose `scp` holds every
  permission the product can use (the CLI applies whatever the app's mode).

The tokens are unsigned (`alg: none`): the simulator and the product read claims, never verify them, and they
only ever go to loopback (shared/graph/auth.py). `tid` is the stack's tenant, so the product's tenant check
passes as it would in Azure.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PERMISSIONS_FILE = Path(__file__).resolve().parent.parent / "infra" / "graph-permissions.json"
GRAPH_AUDIENCE = "https://graph.microsoft.com"
#: The app id the local app token names (the simulator meters requests per app id).
LOCAL_APP_ID = "a11ce5e5-0000-4000-8000-00000000a990"
LOCAL_ADMIN_UPN = "admin@devhost.invalid"
LOCAL_ADMIN_OID = "a11ce5e5-0000-4000-8000-00000000ad17"


def unsigned_jwt(claims: Mapping[str, Any]) -> str:
    """A JWT as Entra shapes it, unsigned (only its claims are read)."""
    def part(value: Mapping[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")
    return f"{part({'typ': 'JWT', 'alg': 'none'})}.{part(claims)}."


def granted_roles(*conditions: str) -> list[str]:
    """The roles infra/graph-permissions.json grants for the given `when` conditions, sorted."""
    roles = json.loads(PERMISSIONS_FILE.read_text(encoding="utf-8"))["roles"]
    return sorted({entry["role"] for entry in roles if entry["when"] in conditions})


def _on(values: Mapping[str, str], name: str) -> bool:
    return (values.get(name) or "").strip().lower() in ("1", "true", "yes")  # as shared/config.py reads a switch


def mode_roles(values: Mapping[str, str], *, read_applications: bool = False) -> list[str]:
    """The roles a deployment with these app settings grants its managed identity (infra's selection)."""
    mode = (values.get("ENFORCEMENT_MODE") or "audit").strip().lower()
    passkeys = "removeStalePasskeys" if _on(values, "REMOVE_STALE_PASSKEYS") else "keepStalePasskeys"
    conditions = ["always", mode, passkeys] + (["readApplications"] if read_applications else [])
    return granted_roles(*conditions)


def app_token(tenant_id: str, roles: list[str]) -> str:
    """An app-only Graph token for the app's identity in `tenant_id`, carrying `roles`."""
    return unsigned_jwt({"aud": GRAPH_AUDIENCE, "tid": tenant_id, "appid": LOCAL_APP_ID, "idtyp": "app",
                         "roles": list(roles)})


def admin_token(tenant_id: str) -> str:
    """A delegated Graph token of the local administrator, with every permission infra can grant as scopes."""
    every = granted_roles("always", "audit", "enforce", "removeStalePasskeys", "keepStalePasskeys",
                          "readApplications")
    return unsigned_jwt({"aud": GRAPH_AUDIENCE, "tid": tenant_id, "idtyp": "user", "upn": LOCAL_ADMIN_UPN,
                         "oid": LOCAL_ADMIN_OID, "scp": " ".join(every)})
