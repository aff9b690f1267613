"""Stand-ins for the two ways Passkey Guard signs in, both on this machine only: the Azure CLI an administrator
has logged in with, and the managed-identity endpoint App Service gives the deployed app. Each records what it
was asked for, so a test can say which sign-in was used."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]

FAKE_AZ = """#!{python}
# A stand-in for the Azure CLI on an administrator's machine: `az account get-access-token` prints a token
# Azurite's --oauth basic accepts, and records which resource was asked for.
import json, sys
sys.path.insert(0, {root!r})
from devhost.azurite import make_dev_token
args = sys.argv[1:]
resource = args[args.index("--resource") + 1]
with open({log!r}, "a") as log:
    log.write(resource + "\\n")
token, expires = make_dev_token(audience=resource.rstrip("/"))
print(json.dumps({{"accessToken": token, "expires_on": expires, "tokenType": "Bearer",
                  "tenant": "00000000-0000-0000-0000-000000000000", "subscription": "s"}}))
"""


def install_fake_az(folder: Path) -> Path:
    """Write an executable `az` into `folder` (put it first on PATH); returns the log of the resources it was
    asked for, one a line (see `resources_asked`)."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "az.log"
    fake = folder / "az"
    fake.write_text(FAKE_AZ.format(python=sys.executable, root=str(ROOT), log=str(log)))
    fake.chmod(0o755)
    return log


def resources_asked(log: Path) -> list[str]:
    """The resources the stand-in `az` was asked for tokens of, in order ([] when it never ran)."""
    return log.read_text().splitlines() if log.exists() else []


#: The environment variables through which azure-identity finds a credential other than the two above.
OTHER_SIGN_INS = ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME",
                  "AZURE_PASSWORD", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_TOKEN_CREDENTIALS", "MSI_ENDPOINT",
                  "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT")

MANAGED_IDENTITY_TOKEN = "managed-identity-token"  # a marker, not a secret


class FakeManagedIdentity:
    """App Service's managed-identity endpoint (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`) on a loopback port.

    `requests` holds the query of every token request (`resource`, and `client_id` for a user-assigned identity).
    """

    header = "fake-identity-header"

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.endpoint = ""

    async def _token(self, request: web.Request) -> web.Response:
        if request.headers.get("X-IDENTITY-HEADER") != self.header:
            return web.json_response({"error": "missing X-IDENTITY-HEADER"}, status=400)
        self.requests.append(dict(request.query))
        return web.json_response({"access_token": MANAGED_IDENTITY_TOKEN, "expires_on": str(int(time.time()) + 3600),
                                  "resource": request.query.get("resource", ""), "token_type": "Bearer"})

    async def start(self) -> FakeManagedIdentity:
        app = web.Application()
        app.router.add_get("/msi/token", self._token)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server  # aiohttp keeps the bound port here
        self.endpoint = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/msi/token"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
