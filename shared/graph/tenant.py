"""Which tenant answers: confirmed once per gateway before its first Graph request.

A `TENANT_ID` that names one tenant while the credential or `GRAPH_BASE_URL` answers for another would read,
plan and write the wrong tenant, and record the results under the wrong id. So before the first request:

- the token's `tid` claim, when the token is a JWT (Entra's always are; the simulator's dev token may be
  opaque), must be `TENANT_ID` (a token for another tenant is refused before Graph is asked);
- `GET /organization` (application permission `Organization.Read.All`; delegated `User.Read` for the CLI)
  must answer with `TENANT_ID` as its one organization's id.

A mismatch raises `WrongTenant` naming both ids. The confirmation is cached on the gateway, so it costs
one Graph read per process (per services lifetime), and every use case is covered because every request
goes through the gateway. Use cases that write storage before their first Graph read call
`confirm_tenant` first, so nothing is recorded under the wrong id either.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.errors import GraphError, WrongTenant
from shared.graph.permissions import token_claims

if TYPE_CHECKING:
    from shared.graph.gateway import GraphGateway

log = logging.getLogger(__name__)
#: The least-privileged application permission for GET /organization; every deployment grants it.
TENANT_READ = "Organization.Read.All"


def _refuse(configured: str, answering: str, by: str) -> WrongTenant:
    return WrongTenant(
        f"TENANT_ID is {configured}, but {by} answers for tenant {answering}; nothing was read or written. "
        "Set TENANT_ID to the tenant you mean, or sign in to (and point GRAPH_BASE_URL at) that tenant",
        detail={"configuredTenantId": configured, "answeringTenantId": answering})


async def confirm_tenant(graph: GraphGateway) -> None:
    """Raise WrongTenant unless the token and Graph both answer for `TENANT_ID`; cached once confirmed."""
    if graph.tenant_confirmed:
        return
    configured = graph.settings.tenant_id.lower()
    claims = token_claims(await graph.access_token())
    tid = claims.get("tid") if claims is not None else None
    if isinstance(tid, str) and tid.lower() != configured:
        raise _refuse(configured, tid.lower(), "the Graph token (its tid claim)")
    body, _ = await graph.send_raw("GET", "/organization?$select=id", what="GET /organization", confirm=False)
    ids = [str(org.get("id", "")).lower() for org in (body or {}).get("value", []) if isinstance(org, dict)]
    if len(ids) != 1 or not ids[0]:
        raise GraphError(f"GET /organization did not name one tenant (got {len(ids)}); cannot confirm TENANT_ID")
    if ids[0] != configured:
        raise _refuse(configured, ids[0], f"Microsoft Graph at {graph.settings.graph_base_url}")
    graph.tenant_confirmed = True
    log.info("tenant %s confirmed by Graph", configured)
