"""Every HTTP route declares who may call it where function_app.py wires it, and the OpenAPI description says
the same: admin routes need PasskeyGuard.Admin, read routes PasskeyGuard.Reader, both checked from the principal
App Service Authentication vouches for; public routes answer errors with a code only. Routes, methods, auth
levels and access are compared with openapi/passkey-guard.yaml both ways; the refusals are driven through the
indexed functions with real azure.functions requests."""
from __future__ import annotations

import inspect
import json
from typing import Any

import azure.functions as func
import pytest

from shared import http_api
from shared.config import Settings
from shared.principal import ADMIN_ROLE, READER_ROLE, Access, encode_principal
from shared.services import Services, use_services
from tests.conftest import CLIENT_STATE, TICKET_SECRET
from tests.functions.routes import (
    ROUTE_ACCESS,
    http_functions,
    http_routes,
    load_spec,
    spec_operations,
    trigger_of,
    wiring,
)

TENANT = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
def offline_services(azurite: Any) -> Any:
    """Services whose Graph is a closed loopback port: a refused request must never reach Graph or storage."""
    def install(**env: str) -> Services:
        settings = Settings.from_env({"TENANT_ID": TENANT, "GRAPH_BASE_URL": "http://127.0.0.1:9/v1.0",
                                      "STATE_STORAGE": azurite.connection_string, **env})
        services = Services.from_settings(settings)
        use_services(services)
        return services

    yield install
    use_services(None)


async def _call(fn: Any, *, headers: dict[str, str] | None = None, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    trigger = trigger_of(fn)
    method = str(getattr(trigger["methods"][0], "value", trigger["methods"][0])).upper()
    req = func.HttpRequest(method=method, url=f"https://func.example/api/{trigger['route']}", headers=headers or {},
                           params={}, route_params={}, body=body)
    resp = await fn.get_user_function()(req)
    return resp.status_code, json.loads(resp.get_body() or b"null")


def test_every_http_function_serves_its_own_use_case_with_a_declared_access(functions):
    """Each HTTP function hands `_serve` exactly one use case, by reference: the shared.http_api function of its
    own name (logs and the per-route body limit use that name), with an Access."""
    for name, wired in wiring(functions).items():
        assert len(wired) == 1, (name, wired)
        assert wired[0].handler is getattr(http_api, name, None), (name, wired[0].handler)
        assert isinstance(wired[0].access, Access), name


def test_every_http_use_case_has_a_route():
    """No use case in shared.http_api is left without a function: the public coroutines there are exactly
    the handlers function_app wires."""
    use_cases = {name for name, obj in vars(http_api).items()
                 if inspect.iscoroutinefunction(obj) and obj.__module__ == http_api.__name__
                 and not name.startswith("_")}
    assert use_cases == set(ROUTE_ACCESS)


def test_routes_and_the_openapi_description_agree(functions):
    """The description's paths and methods are exactly function_app's HTTP routes and methods, both ways;
    operationIds are the function names; x-auth-level is the host's level; a route's declared access is its
    x-required-role (with the Entra bearer of the root security and 401, 403 and 503 documented), and a
    public route needs nothing (`security: []`, no role)."""
    routes = http_routes(functions)
    spec = load_spec()
    operations = spec_operations(spec)
    assert set(operations) == set(routes), sorted(set(operations) ^ set(routes))
    root_security = spec["security"]
    assert root_security == [{"entraBearer": []}]
    assert spec["components"]["securitySchemes"]["entraBearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": spec["components"]["securitySchemes"]["entraBearer"]["description"]}
    for key, op in operations.items():
        name, level = routes[key]
        assert op["operationId"] == name, key
        assert op["x-auth-level"] == level, key
        if ROUTE_ACCESS[name] == Access.PUBLIC.value:
            assert op.get("security") == [] and "x-required-role" not in op, key
        else:
            assert op.get("security", root_security) == root_security, key
            assert op["x-required-role"] == ROUTE_ACCESS[name], key
            assert {"401", "403", "503"} <= set(op["responses"]), key


def test_callers_need_only_an_entra_token(functions):
    """Every HTTP route is ANONYMOUS for the Functions host: App Service Authentication and the role check
    in code protect the admin routes, so callers send a bearer token and no function key."""
    import function_app

    assert str(getattr(function_app.app.auth_level, "value", function_app.app.auth_level)).lower() == "anonymous"
    levels = {n: str(getattr(trigger_of(fn)["authLevel"], "value", trigger_of(fn)["authLevel"])).lower()
              for n, fn in http_functions(functions).items()}
    assert set(levels.values()) == {"anonymous"}, levels


async def test_protected_routes_refuse_a_caller_without_a_principal(functions, offline_services):
    """No X-MS-CLIENT-PRINCIPAL: 401 `unauthenticated`, and the message names the role the route needs."""
    offline_services(WEBSITE_AUTH_ENABLED="True")
    for name, role in ROUTE_ACCESS.items():
        if role == "public":
            continue
        status, body = await _call(functions[name])
        assert status == 401 and body["error"]["code"] == "unauthenticated", (name, body)
        assert role in body["error"]["message"], name


async def test_protected_routes_refuse_a_principal_without_the_role(functions, offline_services):
    """A reader on an admin route and a principal with no role on a read route get 403 `forbidden`."""
    offline_services(WEBSITE_AUTH_ENABLED="True")
    reader = {"X-MS-CLIENT-PRINCIPAL": encode_principal([READER_ROLE])}
    nobody = {"X-MS-CLIENT-PRINCIPAL": encode_principal([])}
    for name, role in ROUTE_ACCESS.items():
        if role == "public":
            continue
        status, body = await _call(functions[name], headers=reader if role == ADMIN_ROLE else nobody)
        assert status == 403 and body["error"]["code"] == "forbidden", (name, body)
        assert role in body["error"]["message"], name


async def test_without_platform_authentication_protected_routes_are_closed(functions, offline_services):
    """WEBSITE_AUTH_ENABLED unset: even an admin principal header is not trusted (it could be forged): 503."""
    offline_services()
    admin = {"X-MS-CLIENT-PRINCIPAL": encode_principal([ADMIN_ROLE])}
    for name, role in ROUTE_ACCESS.items():
        if role == "public":
            continue
        status, body = await _call(functions[name], headers=admin)
        assert status == 503 and body["error"]["code"] == "authUnavailable", (name, body)


async def test_public_routes_answer_errors_with_a_code_only(functions, offline_services):
    """An anonymous caller learns the error code and nothing else: no message, no detail."""
    offline_services(NOTIFICATION_CLIENT_STATE=CLIENT_STATE, TICKET_WEBHOOK_SECRET=TICKET_SECRET)
    for name, body, status in (("tickets", b"{}", 401), ("graph_notifications", b"{not json", 400),
                               ("graph_lifecycle", b"[]", 400)):
        got, answer = await _call(functions[name], body=body)
        assert got == status, (name, answer)
        assert answer == {"error": {"code": answer["error"]["code"]}}, (name, answer)


async def test_admin_routes_keep_their_messages(functions, offline_services):
    """An authenticated admin's bad request still names the problem."""
    offline_services(WEBSITE_AUTH_ENABLED="True")
    admin = {"X-MS-CLIENT-PRINCIPAL": encode_principal([ADMIN_ROLE])}
    status, body = await _call(functions["policy_apply"], headers=admin, body=b"{}")
    assert status == 400 and "planId" in body["error"]["message"]
