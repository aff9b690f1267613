"""The caller App Service Authentication vouches for: X-MS-CLIENT-PRINCIPAL parsed, roles checked, fail closed."""
from __future__ import annotations

import base64
import json

import pytest

from shared.errors import AuthUnavailable, Forbidden, Unauthenticated
from shared.principal import (
    ADMIN_ROLE,
    READER_ROLE,
    ROLE_CLAIM_URI,
    Access,
    authorize,
    encode_principal,
    parse_principal,
)

OID = "00000000-0000-4000-8000-0000000000aa"


def header(claims: list[dict[str, str]], **extra: str) -> str:
    """The header as App Service writes it: base64 of the JSON principal (documented shape)."""
    doc = {"auth_typ": "aad", "claims": claims,
           "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "role_typ": ROLE_CLAIM_URI,
           **extra}
    return base64.b64encode(json.dumps(doc).encode()).decode()


def test_roles_come_from_the_role_claim_type_and_from_roles():
    """Roles are read from claims of the principal's role_typ and from `roles` claims."""
    principal = parse_principal(header([
        {"typ": ROLE_CLAIM_URI, "val": READER_ROLE}, {"typ": "roles", "val": "Other.Role"},
        {"typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "val": "ada@contoso.example"},
        {"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": OID}]))
    assert principal.roles == frozenset({READER_ROLE, "Other.Role"})
    assert principal.name == "ada@contoso.example" and principal.object_id == OID and principal.auth_type == "aad"


def test_a_custom_role_typ_is_honoured():
    """When role_typ names another claim type, claims of that type are the roles."""
    principal = parse_principal(header([{"typ": "approles", "val": ADMIN_ROLE}], role_typ="approles"))
    assert principal.roles == frozenset({ADMIN_ROLE})


@pytest.mark.parametrize("raw", ["", "not base64!", base64.b64encode(b"[1, 2]").decode(),
                                 base64.b64encode(b"{\"claims\": 5}").decode(),
                                 base64.b64encode(b"{\"claims\": [{\"typ\": 1}]}").decode(),
                                 base64.b64encode(b"\xff\xfe").decode(),
                                 base64.b64encode(b"[" * 40000).decode()])
def test_a_malformed_header_is_unauthenticated(raw):
    """A header that is not base64 JSON of the documented shape never yields a principal."""
    with pytest.raises(Unauthenticated):
        parse_principal(raw)


def test_admin_implies_reader_but_not_the_reverse():
    """PasskeyGuard.Admin may read; PasskeyGuard.Reader may not write."""
    admin = parse_principal(header([{"typ": "roles", "val": ADMIN_ROLE}]))
    reader = parse_principal(header([{"typ": "roles", "val": READER_ROLE}]))
    assert admin.has(Access.READER) and admin.has(Access.ADMIN)
    assert reader.has(Access.READER) and not reader.has(Access.ADMIN)


def test_no_principal_is_401_naming_the_role():
    """Without the header the caller is unauthenticated (401), and the message names the role needed."""
    with pytest.raises(Unauthenticated) as info:
        authorize(Access.ADMIN, {}, auth_enabled=True)
    assert info.value.status == 401 and info.value.code == "unauthenticated" and ADMIN_ROLE in info.value.message


def test_a_principal_without_the_role_is_403_naming_it():
    """A reader on an admin route, or a caller with no role at all, gets 403 `forbidden` naming the role."""
    reader = {"x-ms-client-principal": header([{"typ": "roles", "val": READER_ROLE}])}
    nobody = {"x-ms-client-principal": header([])}
    for headers, access in ((reader, Access.ADMIN), (nobody, Access.READER)):
        with pytest.raises(Forbidden) as info:
            authorize(access, headers, auth_enabled=True)
        assert info.value.status == 403 and info.value.code == "forbidden" and access.value in info.value.message


def test_the_role_lets_the_caller_in():
    """A principal with the role passes and is returned."""
    headers = {"x-ms-client-principal": header([{"typ": "roles", "val": ADMIN_ROLE}])}
    assert authorize(Access.ADMIN, headers, auth_enabled=True).roles == frozenset({ADMIN_ROLE})
    assert authorize(Access.READER, headers, auth_enabled=True) is not None


def test_without_platform_authentication_the_header_is_not_trusted():
    """With WEBSITE_AUTH_ENABLED unset the header could be forged: protected routes refuse with 503."""
    headers = {"x-ms-client-principal": header([{"typ": "roles", "val": ADMIN_ROLE}])}
    for access in (Access.ADMIN, Access.READER):
        with pytest.raises(AuthUnavailable) as info:
            authorize(access, headers, auth_enabled=False)
        assert info.value.status == 503 and info.value.code == "authUnavailable"
        assert "WEBSITE_AUTH_ENABLED" in info.value.message


def test_public_routes_need_nothing():
    """A public route is served with or without platform authentication and without a principal."""
    assert authorize(Access.PUBLIC, {}, auth_enabled=False) is None


def test_encode_principal_round_trips():
    """The helper devhost and the tests use writes the header App Service would write."""
    raw = encode_principal([ADMIN_ROLE], name="ops@contoso.example")
    principal = parse_principal(raw)
    assert principal.roles == frozenset({ADMIN_ROLE}) and principal.name == "ops@contoso.example"
