"""Which Graph permissions a plan's writes need, and whether the app's own token carries them.

Checked once, before the first write of an apply or a rollback, so a missing permission fails the whole
run with the permission named instead of leaving the tenant half-written (the FIDO2 PATCH sent, then the
Conditional Access write refused with a 403).

- The permissions come from the access token the gateway sends to Graph: a JWT whose `roles` claim lists
  the application permissions granted to the managed identity (app-only token), or whose `scp` claim lists
  the delegated scopes (the CLI under an administrator's sign-in; their directory role stays Graph's to
  check). The payload is read without verifying the signature: it is our own token, just issued by Entra
  for Graph, and Graph verifies it. This check grants nothing; it only refuses early.
- Fail closed: a token that is not a JWT, or carries neither claim, is refused. Only the simulator's
  loopback dev token (`GRAPH_DEV_TOKEN`) may be opaque; the check is then skipped, and says so in the log.
- A managed identity's token is cached for up to 24 hours: a role granted since is seen once it refreshes.

`WRITE_ROLES` follows the permission table of graph-contract.md and infra/graph-permissions.json
(tests/graph/test_permissions.py keeps them in step).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from shared.errors import MissingGraphPermission
from shared.ids import is_guid

if TYPE_CHECKING:
    from shared.graph.gateway import GraphGateway

log = logging.getLogger(__name__)

APPLICATION_READ = "Application.Read.All"
_CA_WRITE = ("Policy.ReadWrite.ConditionalAccess", "Policy.Read.All")  # Graph wants both to write a CA policy
#: The least-privileged permissions each kind of write needs (plan write ops, and the tracker's deletion).
WRITE_ROLES: dict[str, tuple[str, ...]] = {
    "patch_fido2": ("Policy.ReadWrite.AuthenticationMethod",),
    "create_strength": ("Policy.ReadWrite.ConditionalAccess",),
    "update_strength": ("Policy.ReadWrite.ConditionalAccess",),
    "update_strength_combinations": ("Policy.ReadWrite.ConditionalAccess",),
    "create_combination_configuration": ("Policy.ReadWrite.ConditionalAccess",),
    "update_combination_configuration": ("Policy.ReadWrite.ConditionalAccess",),
    "create_ca_policy": _CA_WRITE,
    "update_ca_policy": _CA_WRITE,
    # a rollback's deletions of what an apply created
    "delete_strength": ("Policy.ReadWrite.ConditionalAccess",),
    "delete_combination_configuration": ("Policy.ReadWrite.ConditionalAccess",),
    "delete_ca_policy": _CA_WRITE,
    "delete_passkey": ("UserAuthMethod-Passkey.ReadWrite.All",),
}
#: Broader permissions Graph also accepts in place of a least-privileged one (a tenant may have granted them).
ALSO_ACCEPTED: dict[str, tuple[str, ...]] = {
    "UserAuthMethod-Passkey.ReadWrite.All": ("UserAuthenticationMethod.ReadWrite.All",),
    # Only for a CA write naming application ids: Graph's create page lists Application.Read.All and no
    # Directory.* stand-in, so one would pass here and be refused by Graph after the FIDO2 PATCH went out.
    APPLICATION_READ: ("Application.ReadWrite.All",),
}
#: How a deployment gets each permission (infra/main.bicep parameters), for the error message.
HOW_TO_GRANT: dict[str, str] = {
    "Policy.ReadWrite.AuthenticationMethod": "deploy with enforcementMode=enforce",
    "Policy.ReadWrite.ConditionalAccess": "deploy with enforcementMode=enforce",
    "Policy.Read.All": "granted by every deployment",
    APPLICATION_READ: "deploy with grantApplicationRead=true, or name no application id in "
                      "conditionalAccess.includeApplications",
    "UserAuthMethod-Passkey.ReadWrite.All": "deploy with removeStalePasskeys=true",
}


def _names_applications(body: Mapping[str, Any]) -> bool:
    """True when a CA policy body names an application by id (not only keywords such as All)."""
    conditions = body.get("conditions")
    apps = conditions.get("applications") if isinstance(conditions, Mapping) else None
    if not isinstance(apps, Mapping):
        return False
    values = [*(apps.get("includeApplications") or []), *(apps.get("excludeApplications") or [])]
    return any(is_guid(v) for v in values)


def required_roles(writes: Iterable[Mapping[str, Any]]) -> set[str]:
    """The permissions the given writes need, least-privileged; an unknown write kind is an error."""
    needed: set[str] = set()
    for write in writes:
        op = str(write.get("op"))
        if op not in WRITE_ROLES:
            raise ValueError(f"no Graph permission is known for write {op!r}")
        needed.update(WRITE_ROLES[op])
        if op in ("create_ca_policy", "update_ca_policy") and _names_applications(write.get("body") or {}):
            needed.add(APPLICATION_READ)
    return needed


def missing_roles(required: Iterable[str], granted: Iterable[str]) -> list[str]:
    """The required permissions that neither the token nor a broader permission Graph accepts covers."""
    have = set(granted)
    return sorted(r for r in set(required) if r not in have and not have & set(ALSO_ACCEPTED.get(r, ())))


def token_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, not verified; None when `token` is not a JWT with a JSON object payload."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def granted_roles(claims: Mapping[str, Any]) -> set[str] | None:
    """Application roles (`roles`) and delegated scopes (`scp`) of a token; None when it carries neither."""
    roles, scopes = claims.get("roles"), claims.get("scp")
    found: set[str] | None = None
    if isinstance(roles, list) and all(isinstance(r, str) for r in roles):
        found = set(roles)
    if isinstance(scopes, str):
        found = (found or set()) | set(scopes.split())
    return found


def check_token(token: str, required: set[str], *, local: bool) -> None:
    """Raise MissingGraphPermission unless `token` carries every permission in `required`.

    `local`: Graph is the loopback simulator, where an opaque dev token skips the check.
    """
    if not required:
        return
    claims = token_claims(token)
    if claims is None and local:
        log.info("permission check skipped: the loopback dev token is not a JWT (needed: %s)",
                 ", ".join(sorted(required)))
        return
    granted = granted_roles(claims) if claims is not None else None
    missing = sorted(required) if granted is None else missing_roles(required, granted)
    if not missing:
        return
    why = ("the app's Graph token is not a JWT with a roles claim, so it does not show " if granted is None
           else "the app's Graph token lacks ")
    hints = "; ".join(f"{role}: {HOW_TO_GRANT[role]}" for role in missing if role in HOW_TO_GRANT)
    raise MissingGraphPermission(
        f"{why}{', '.join(missing)}, which the planned writes need; nothing was written. Grant the Graph "
        f"application permission and retry once the token refreshes ({hints})",
        detail={"missingRoles": missing, "requiredRoles": sorted(required)})


async def require_write_roles(graph: GraphGateway, writes: Iterable[Mapping[str, Any]]) -> None:
    """Before the first write: refuse the run when the app's token lacks a permission the writes need."""
    required = required_roles(writes)
    if required:
        check_token(await graph.access_token(), required, local=graph.settings.graph_is_local)
