"""Who is calling an admin route, as App Service Authentication (Easy Auth) vouches for it.

App Service validates the caller's Microsoft Entra bearer token in front of the app and passes the
result in `X-MS-CLIENT-PRINCIPAL`: base64 of `{"auth_typ", "claims": [{"typ", "val"}], "name_typ",
"role_typ"}`. It strips that header from every incoming request, so the header can be trusted only
when the platform says authentication is on (`WEBSITE_AUTH_ENABLED=True`, set by App Service, never by
us). Without it the header is forgeable, so protected routes refuse (fail closed).

Each HTTP route declares its `Access` where `function_app.py` wires it; `authorize` is the one check.
The app roles are defined on the app registration `infra/app/api-app.bicep` creates.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from shared.errors import AuthUnavailable, Forbidden, Unauthenticated

log = logging.getLogger(__name__)
ADMIN_ROLE = "PasskeyGuard.Admin"
READER_ROLE = "PasskeyGuard.Reader"
PRINCIPAL_HEADER = "x-ms-client-principal"
#: The claim types App Service uses by default for roles and for the display name.
ROLE_CLAIM_URI = "http://schemas.microsoft.com/ws/2008/06/identity/claims/role"
NAME_CLAIM_URI = "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name"
_OBJECT_ID_CLAIMS = ("http://schemas.microsoft.com/identity/claims/objectidentifier", "oid")
_MAX_HEADER = 64 * 1024


class Access(Enum):
    """What a route needs. PUBLIC routes authenticate themselves (clientState, HMAC) or reveal nothing;
    their error bodies carry a code only. READER and ADMIN name the app role (ADMIN implies READER)."""

    PUBLIC = "public"
    READER = READER_ROLE
    ADMIN = ADMIN_ROLE


@dataclass(frozen=True)
class Principal:
    """A signed-in user or application, with its app roles."""

    auth_type: str
    name: str | None
    object_id: str | None
    roles: frozenset[str]

    def has(self, access: Access) -> bool:
        """True when the principal may use a route of this access level."""
        if access is Access.PUBLIC or ADMIN_ROLE in self.roles:
            return True
        return access.value in self.roles


def parse_principal(raw: str) -> Principal:
    """Decode `X-MS-CLIENT-PRINCIPAL`; anything but the documented shape is Unauthenticated."""
    refused = Unauthenticated("the X-MS-CLIENT-PRINCIPAL header is not a valid App Service principal")
    if not raw or len(raw) > _MAX_HEADER:
        raise refused
    try:
        doc = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise refused from None
    claims = doc.get("claims") if isinstance(doc, dict) else None
    if not isinstance(claims, list) or not all(
            isinstance(c, dict) and isinstance(c.get("typ"), str) and isinstance(c.get("val"), str) for c in claims):
        raise refused
    role_typ = doc.get("role_typ") if isinstance(doc.get("role_typ"), str) else ROLE_CLAIM_URI
    name_typ = doc.get("name_typ") if isinstance(doc.get("name_typ"), str) else NAME_CLAIM_URI
    pairs = [(c["typ"], c["val"]) for c in claims]
    roles = frozenset(val for typ, val in pairs if typ in (role_typ, "roles", ROLE_CLAIM_URI))
    name = next((val for typ, val in pairs if typ in (name_typ, "name", "preferred_username")), None)
    object_id = next((val for typ, val in pairs if typ in _OBJECT_ID_CLAIMS), None)
    auth_type = doc.get("auth_typ") if isinstance(doc.get("auth_typ"), str) else ""
    return Principal(auth_type=auth_type, name=name, object_id=object_id, roles=roles)


def authorize(access: Access, headers: Mapping[str, str], *, auth_enabled: bool,
              route: str = "") -> Principal | None:
    """The caller of a route with this access, or an error: 503 when platform authentication is off
    (the header could be forged), 401 without a principal, 403 without the role. `headers` is looked up
    with the lower-case name (func.HttpRequest's headers are case-insensitive)."""
    if access is Access.PUBLIC:
        return None
    if not auth_enabled:
        raise AuthUnavailable("App Service Authentication is not enabled for this app (WEBSITE_AUTH_ENABLED is "
                              "not True), so the caller cannot be trusted; this route is refused until it is")
    raw = headers.get(PRINCIPAL_HEADER)
    if not raw:
        raise Unauthenticated(f"sign in with Microsoft Entra ID: this route needs the app role {access.value}")
    principal = parse_principal(raw)
    if not principal.has(access):
        held = ", ".join(sorted(principal.roles)) or "no app role"
        log.warning("route %s refused to %s (object id %s): needs %s", route, principal.name, principal.object_id,
                    access.value)
        raise Forbidden(f"this route needs the app role {access.value}; the caller has {held}")
    log.info("route %s called by %s (object id %s)", route, principal.name, principal.object_id)
    return principal


def encode_principal(roles: Iterable[str], *, name: str = "tester@contoso.example",
                     object_id: str = "00000000-0000-4000-8000-000000000001") -> str:
    """The header App Service would write for a principal with these roles (devhost and tests)."""
    claims = [{"typ": NAME_CLAIM_URI, "val": name}, {"typ": _OBJECT_ID_CLAIMS[0], "val": object_id}]
    claims += [{"typ": ROLE_CLAIM_URI, "val": role} for role in roles]
    doc = {"auth_typ": "aad", "claims": claims, "name_typ": NAME_CLAIM_URI, "role_typ": ROLE_CLAIM_URI}
    return base64.b64encode(json.dumps(doc).encode()).decode()
