"""Reads of the tenant's current policy state, as raw Graph JSON.

Raw JSON, not SDK models: the models drop a multi-value `passkeyTypes` ("deviceBound,synced") and parse
multi-method `allowedCombinations` ("password,sms") as None (graph-contract pitfalls 2, 3 and 6).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from shared.errors import GraphError, NotFound
from shared.graph.gateway import GraphGateway
from shared.graph.passkeys import read_passkeys
from shared.policy.aaguids import is_guid
from shared.policy.current import ca_policies_named
from shared.policy.document import DesiredState

log = logging.getLogger(__name__)

FIDO2_PATH = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"
STRENGTHS_PATH = "/policies/authenticationStrengthPolicies"
CA_PATH = "/identity/conditionalAccess/policies"
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
    for strength in strengths:
        if (with_configurations_for is not None and strength.get("displayName") == with_configurations_for
                and strength.get("policyType") == "custom"):
            configs = await graph.get_all(f"{STRENGTHS_PATH}/{strength['id']}/combinationConfigurations",
                                          what="read the strength's combination configurations")
            strength["combinationConfigurations"] = [_clean(c) for c in configs]
    return strengths


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


async def read_ca_names(graph: GraphGateway, desired: DesiredState, ca_raw: object = None
                        ) -> dict[str, dict[str, Any] | None]:
    """The users and applications the CA section names by id, and the users, groups and applications the
    tenant's policy of that name covers today (`ca_raw`), so a plan can show them by name.

    Users: `GET /users/{id}` (User.Read.All). Applications: `GET /servicePrincipals(appId='{id}')`, which
    needs Application.Read.All (opt-in, `grantApplicationRead`). None for an id Graph does not know; an id
    whose read failed (no permission, any Graph error) is left out and shown as "name not readable".
    Never raises for a name: names only inform people, they decide nothing.
    """
    ca = desired.conditional_access
    if ca is None:
        return {}
    users, apps, groups = [*ca.include_users, *ca.exclude_users], [*ca.include_applications], []
    for policy in ca_policies_named(ca_raw or [], ca.display_name):
        users += [*policy.include_users, *policy.exclude_users]
        groups += [*policy.include_groups, *policy.exclude_groups]
        apps += policy.include_applications
    known_groups = {g.lower() for g in desired.group_ids()}
    users = [u for u in dict.fromkeys(users) if is_guid(u)]
    apps = [a for a in dict.fromkeys(apps) if is_guid(a)]
    groups = [g for g in dict.fromkeys(groups) if is_guid(g) and g.lower() not in known_groups]

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
          for a in apps),
        *(one(g, f"/groups/{g}?$select=id,displayName", "read a CA group's name") for g in groups))
    return dict(pair for pair in found if pair is not None)


async def read_users_with_passkeys(graph: GraphGateway, user_ids: list[str] | None = None
                                   ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """Every user's registered passkeys (raw fido2Methods), read 20 per `$batch` at the tenant's pace.

    Returns (passkeys by user id, UPN by user id); users without passkeys are left out of the first map.
    """
    upns: dict[str, str] = {}
    if user_ids is None:
        async for page in graph.get_pages("/users?$select=id,userPrincipalName&$top=999", what="list users"):
            for user in page.get("value", []):
                upns[user["id"]] = user.get("userPrincipalName", "")
        user_ids = list(upns)
    passkeys = {uid: keys for uid, keys in (await read_passkeys(graph, user_ids)).items() if keys}
    return passkeys, upns
