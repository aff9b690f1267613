"""Reads of the tenant's policy state, as raw Graph JSON: the FIDO2 method configuration, authentication
strengths and their combination configurations, Conditional Access policies, the groups a document
targets, the names of the users, applications and groups a CA policy covers, and the users (with their
passkeys) a lockout check looks at.

Raw JSON, not SDK models: the models drop a multi-value `passkeyTypes` ("deviceBound,synced") and parse
multi-method `allowedCombinations` ("password,sms") as None (graph-contract pitfalls 2, 3 and 6).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from shared.errors import GraphError, NotFound
from shared.graph.gateway import GraphGateway
from shared.graph.passkeys import read_passkeys
from shared.graph.policy_paths import CA_PATH, FIDO2_PATH, STRENGTHS_PATH, configurations_path

log = logging.getLogger(__name__)

#: Volatile or read-only fields that are never part of a comparison or a write.
READ_ONLY_FIELDS = ("@odata.context", "@odata.etag")


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in READ_ONLY_FIELDS}


async def read_fido2_raw(graph: GraphGateway) -> dict[str, Any]:
    """The Passkey (FIDO2) method configuration exactly as Graph sends it (minus @odata.context)."""
    return _clean(await graph.get_json(FIDO2_PATH, what="read the passkey (FIDO2) policy"))


async def read_strengths_raw(graph: GraphGateway, *, with_configurations_for: str | None = None
                             ) -> list[dict[str, Any]]:
    """All authentication strength policies; the one named `with_configurations_for` (custom only)
    also gets its `combinationConfigurations` read from their own collection."""
    strengths = [_clean(s) for s in await graph.get_all(STRENGTHS_PATH, what="list authentication strengths")]
    if with_configurations_for is not None:
        await read_combination_configurations(
            graph, [s for s in strengths if s.get("displayName") == with_configurations_for])
    return strengths


async def read_combination_configurations(graph: GraphGateway, strengths: Iterable[dict[str, Any]]) -> None:
    """Fill in `combinationConfigurations` of each custom strength given, read from their own collection
    (the strengths' list does not carry them); built-in strengths are left as they are."""
    for strength in strengths:
        if strength.get("policyType") == "custom":
            configs = await graph.get_all(configurations_path(str(strength["id"])),
                                          what="read the strength's combination configurations")
            strength["combinationConfigurations"] = [_clean(c) for c in configs]


async def read_ca_policies_raw(graph: GraphGateway) -> list[dict[str, Any]]:
    """All Conditional Access policies."""
    return [_clean(p) for p in await graph.get_all(CA_PATH, what="list Conditional Access policies")]


async def read_groups(graph: GraphGateway, group_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each group by id with the fields the target check needs; None for a group that does not exist."""

    async def one(group_id: str) -> tuple[str, dict[str, Any] | None]:
        try:
            doc = await graph.get_json(
                f"/groups/{group_id}?$select=id,displayName,securityEnabled,mailEnabled,groupTypes",
                what="read a target group")
            return group_id, _clean(doc)
        except NotFound:
            return group_id, None

    return dict(await asyncio.gather(*(one(g) for g in dict.fromkeys(group_ids))))


async def read_directory_names(graph: GraphGateway, *, users: Iterable[str] = (), applications: Iterable[str] = (),
                               groups: Iterable[str] = ()) -> dict[str, dict[str, Any] | None]:
    """The display names of users, applications (by appId) and groups, so a plan can show them by name.

    Users: `GET /users/{id}` (User.Read.All). Applications: `GET /servicePrincipals(appId='{id}')`, which
    needs Application.Read.All (opt-in, `grantApplicationRead`). None for an id Graph does not know; an id
    whose read failed (no permission, any Graph error) is left out and shown as "name not readable".
    Never raises for a name: names only inform people, they decide nothing.
    """

    async def one(oid: str, path: str, what: str) -> tuple[str, dict[str, Any] | None] | None:
        try:
            return oid, _clean(await graph.get_json(path, what=what))
        except NotFound:
            return oid, None
        except GraphError as exc:
            log.info("could not read the name of %s: %s", oid, type(exc).__name__)
            return None

    found = await asyncio.gather(
        *(one(u, f"/users/{u}?$select=id,displayName,userPrincipalName", "read a CA user's name") for u in users),
        *(one(a, f"/servicePrincipals(appId='{a}')?$select=appId,displayName", "read a CA application's name")
          for a in applications),
        *(one(g, f"/groups/{g}?$select=id,displayName", "read a CA group's name") for g in groups))
    return dict(pair for pair in found if pair is not None)


async def list_user_upns(graph: GraphGateway) -> dict[str, str]:
    """Every user's UPN by user id, read page by page."""
    upns: dict[str, str] = {}
    async for page in graph.get_pages("/users?$select=id,userPrincipalName&$top=999", what="list users"):
        for user in page.get("value", []):
            upns[user["id"]] = user.get("userPrincipalName", "")
    return upns


async def read_users_with_passkeys(graph: GraphGateway, user_ids: list[str] | None = None
                                   ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Every user's registered passkeys (raw fido2Methods), read 20 per `$batch` at the tenant's pace.

    Returns (passkeys by user id, UPN by user id); users without passkeys are left out of the first map.
    """
    upns: dict[str, str] = {}
    if user_ids is None:
        upns = await list_user_upns(graph)
        user_ids = list(upns)
    passkeys = {uid: keys for uid, keys in (await read_passkeys(graph, user_ids)).items() if keys}
    return passkeys, upns
