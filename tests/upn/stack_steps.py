"""What the UPN tests do to a running stack (tests/e2e/stack.py): rename a user through Graph, subscribe the
served app, build Graph's published notifications, read a user's passkeys as the simulator holds them, and
post a signed ticket."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import httpx

from shared.upn.subscriptions import ensure_subscription
from shared.upn.ticket_webhook import sign_ticket
from tests import payloads
from tests.conftest import CLIENT_STATE, TICKET_SECRET
from tests.e2e.stack import Stack, uid


async def subscribe(stack: Stack) -> dict[str, Any]:
    """Create the /users subscription pointing at the served app (the handshake runs for real)."""
    stack.services.settings = replace(stack.services.settings,
                                      notification_url=f"{stack.host.url}/api/graph/notifications",
                                      lifecycle_notification_url=f"{stack.host.url}/api/graph/lifecycle")
    return await ensure_subscription(stack.services)


#: The bearer token of the tenant's own administrator, renaming users in the portal or with their own tools:
#: opaque, so the simulator grants it every role. The app's token may not write users, as in Azure.
TENANT_ADMIN_TOKEN = "tenant-administrator"


async def as_tenant_admin(stack: Stack, method: str, path: str, body: dict[str, Any] | None = None) -> None:
    """One Graph call by the tenant's administrator (`path` under the simulator's /v1.0); it must succeed."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TENANT_ADMIN_TOKEN}"}) as graph:
        resp = await graph.request(method, f"{stack.sim.base_url}{path}", json=body)
    assert resp.status_code < 300, resp.text


async def rename(stack: Stack, n: int, new_upn: str) -> None:
    """An administrator changes user n's UPN through Graph (the simulator notifies as Graph would)."""
    await as_tenant_admin(stack, "PATCH", f"/users/{uid(n)}", {"userPrincipalName": new_upn})


def notification(stack: Stack, n: int, *, client_state: str = CLIENT_STATE,
                 name: str = "notification-user-updated") -> bytes:
    """Microsoft's published change notification `name` for user n of this stack, as the bytes Graph POSTs."""
    return payloads.wire(payloads.load(name, tenant_id=stack.tenant_id, user_id=uid(n), client_state=client_state))


def keys(stack: Stack, n: int) -> list[dict[str, Any]]:
    """The user's passkeys as the simulator holds them (ground truth)."""
    me = next(u for u in stack.sim.state()["users"] if u["id"] == uid(n))
    return list(me.get("authentication", {}).get("fido2Methods", []))


async def post_ticket(stack: Stack, payload: dict[str, Any]) -> tuple[int, str]:
    """POST `payload` to the ticket webhook, signed now with the stack's secret; (status, body text)."""
    body = json.dumps(payload).encode()
    status, text, _ = await stack.post("tickets", body, headers=sign_ticket(body, TICKET_SECRET, int(time.time())))
    return status, text


def history_kinds(flag: dict[str, Any]) -> list[str]:
    """Each line of a flag's history by its kind: the note up to its first semicolon or colon ("UPN changed",
    "passkey details read", ...)."""
    return [h["note"].split(";")[0].split(":")[0] for h in flag["history"]]
