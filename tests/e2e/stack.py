"""The whole product on loopback: the Graph simulator, Azurite, and the function app served by devhost.

`running_stack(azurite, tenant)` starts a simulator for `tenant`, builds the product's own Services
for it (a fresh tenant partition in the shared Azurite), serves function_app through devhost with
the queue drained into the queue function, and stops everything afterwards.

The stack plays App Service Authentication: its settings say WEBSITE_AUTH_ENABLED=True, and `get`/`post`
send the X-MS-CLIENT-PRINCIPAL header App Service would write for a PasskeyGuard.Admin caller, unless
told another `principal` (None: no header, as for an anonymous caller).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from devhost.azurite import Azurite
from devhost.host import DevHost
from devhost.stack import local_stack, tenant_id_of
from graphsim.launcher import Simulator
from shared.principal import ADMIN_ROLE, PRINCIPAL_HEADER, encode_principal
from shared.services import Services
from tests.conftest import app_settings

YUBI = "cb69481e-8ff7-4039-93ec-0a2729a154a8"
ANDROID = "de1e552d-db1d-4423-a619-566b625cdc84"
IOS = "90a3ccdf-635c-4729-a248-9b709135078f"
ADMIN_PRINCIPAL = encode_principal([ADMIN_ROLE], name="admin@contoso.example")
#: Notification timing scaled down; Conditional Access keeps Graph's 1 request/s (issue #13: never raised for speed).
FAST_SIM = {"notify_batch_window_s": 0.05, "notify_retry_backoff_s": 0.1}


def uid(n: int) -> str:
    return f"{n:08d}-aaaa-4bbb-8ccc-000000000000"


def user(n: int, *, key: str | None = YUBI, domain: str = "contoso.example") -> dict[str, Any]:
    doc: dict[str, Any] = {"id": uid(n), "userPrincipalName": f"user{n}@{domain}", "displayName": f"User {n}",
                           "accountEnabled": True}
    if key:
        doc["authentication"] = {"fido2Methods": [{
            "id": f"key{n}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA0", "displayName": "Security key", "aaGuid": key,
            "model": "YubiKey 5 NFC", "createdDateTime": "2025-05-01T08:00:00Z", "attestationLevel": "attested",
            "passkeyType": "deviceBound"}]}
    return doc


def tenant(users: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A tenant file with a fresh tenant id (so its storage rows are its own)."""
    return {"tenantId": str(uuid.uuid4()), "users": users, "groups": [],
            "authenticationMethodConfigurations": {"fido2": {
                "@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration", "id": "Fido2",
                "state": "enabled", "isSelfServiceRegistrationAllowed": True, "isAttestationEnforced": False,
                "keyRestrictions": {"isEnforced": True, "enforcementType": "allow", "aaGuids": [YUBI]},
                "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": False}],
                "excludeTargets": []}},
            "authenticationStrengthPolicies": [], "conditionalAccessPolicies": [],
            "simulator": dict(FAST_SIM), **extra}


@dataclass
class Stack:
    sim: Simulator
    services: Services
    host: DevHost

    @property
    def tenant_id(self) -> str:
        return self.services.settings.tenant_id

    async def post(self, path: str, body: bytes | str = b"", *, headers: dict[str, str] | None = None,
                   params: dict[str, str] | None = None, principal: str | None = ADMIN_PRINCIPAL
                   ) -> tuple[int, str, dict[str, str]]:
        """POST to the served function app as `principal`; returns (status, text, headers)."""
        data = body.encode() if isinstance(body, str) else body
        async with aiohttp.ClientSession() as session, session.post(
                f"{self.host.url}/api/{path}", data=data, headers=_with_principal(headers, principal),
                params=params or {}) as resp:
            return resp.status, await resp.text(), dict(resp.headers)

    async def get(self, path: str, *, params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                  principal: str | None = ADMIN_PRINCIPAL) -> tuple[int, str, dict[str, str]]:
        """GET from the served function app as `principal`; returns (status, text, headers)."""
        async with aiohttp.ClientSession() as session, session.get(
                f"{self.host.url}/api/{path}", params=params or {},
                headers=_with_principal(headers, principal)) as resp:
            return resp.status, await resp.text(), dict(resp.headers)

    async def flag(self, user_id: str) -> dict[str, Any] | None:
        """The user's stored flag as the API shows it, or None."""
        from shared.upn.flag_views import public_flag

        stored = await self.services.store.flags.get(user_id)
        return public_flag(stored) if stored else None

    async def settled_flag(self, user_id: str) -> dict[str, Any] | None:
        """The user's flag once its passkey details are read (the slow lane has run for it), or None."""
        flag = await self.flag(user_id)
        return flag if flag is not None and flag["passkeyDetails"] == "complete" else None

    async def queues_empty(self) -> bool:
        """Nothing left on the processor's queue nor on its slow lane."""
        store = self.services.store
        return await store.queue.peek_count() == 0 and await store.passkey_reads.peek_count() == 0

    async def all_flags(self) -> list[dict[str, Any]]:
        """Every stored flag as the API shows it."""
        from shared.upn.flag_views import public_flag

        return [public_flag(f) async for f in self.services.store.flags.every()]


async def admin_edits_ca_policy(sim: Simulator, policy_id: str, body: dict[str, Any]) -> None:
    """An administrator edits a CA policy through Graph, from another app, a second after the product's last
    CA call: CA allows one request per second per tenant across all apps, so the simulator's clock moves on
    by that second instead of the test sleeping or the limit being raised."""
    import httpx

    sim.throttle_clock(advance=1.1)
    async with httpx.AsyncClient(base_url=sim.base_url, headers={"Authorization": "Bearer dev"}) as graph:
        answer = await graph.patch(f"/identity/conditionalAccess/policies/{policy_id}", json=body)
    assert answer.status_code == 204, answer.text


def _with_principal(headers: dict[str, str] | None, principal: str | None) -> dict[str, str]:
    """The request headers with the principal App Service would add (explicit headers win)."""
    out = {} if principal is None else {PRINCIPAL_HEADER: principal}
    for name, value in (headers or {}).items():
        out = {k: v for k, v in out.items() if k.lower() != name.lower()}
        out[name] = value
    return out


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 180.0,  # noqa: ASYNC109
                     interval: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy (the queue is drained in the background); `timeout`
    only bounds a failure, generously, so a loaded machine is never mistaken for a broken one."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running_stack(azurite: Azurite, tenant_doc: dict[str, Any], *, drain: bool = True,
                        **env: str) -> AsyncIterator[Stack]:
    """`devhost.stack.local_stack` on the session Azurite with the test settings, as App Service
    Authentication would run it, the queue drained often so tests wait little."""
    # the platform's report of Easy Auth, and the app's Graph token with the roles infra grants
    settings = app_settings(tenant_id_of(tenant_doc), WEBSITE_AUTH_ENABLED="True", **env)
    async with local_stack(tenant_doc, azurite=azurite, settings=settings, drain=drain,
                           poll_seconds=0.05) as stack:
        assert stack.host is not None
        yield Stack(sim=stack.sim, services=stack.services, host=stack.host)
