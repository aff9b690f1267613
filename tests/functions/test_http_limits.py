"""The HTTP functions refuse an oversized body from its declared Content-Length, before reading it, and
refuse unknown or malformed query parameters by name; called with real azure.functions requests."""
from __future__ import annotations

import json
from typing import Any

import azure.functions as func
import pytest

from tests.e2e.stack import ADMIN_PRINCIPAL, running_stack, tenant, user

PUBLIC = {"graph_notifications", "graph_lifecycle", "tickets"}  # anonymous: error bodies carry a code only


class CountingRequest(func.HttpRequest):
    """A real HttpRequest that counts reads of its body (the host hands the body over; we must not copy it)."""

    reads = 0

    def get_body(self) -> bytes:
        self.reads += 1
        return super().get_body()


def request(method: str, route: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
            params: dict[str, str] | None = None) -> CountingRequest:
    """A request as App Service Authentication passes it on for a PasskeyGuard.Admin caller."""
    return CountingRequest(method=method, url=f"http://localhost/api/{route}",
                           headers={"X-MS-CLIENT-PRINCIPAL": ADMIN_PRINCIPAL, **(headers or {})},
                           params=params or {}, route_params={}, body=body)


async def call(functions: dict[str, Any], name: str, req: func.HttpRequest) -> tuple[int, dict[str, Any]]:
    resp = await functions[name].get_user_function()(req)
    return resp.status_code, json.loads(resp.get_body() or b"null")


@pytest.fixture
async def stack(azurite):
    async with running_stack(azurite, tenant([user(1)]), drain=False) as running:
        yield running


@pytest.mark.parametrize(("name", "route", "declared"), [
    ("policy_verify", "policy/verify", 1024 * 1024 + 1),
    ("policy_plan", "policy/plan", 50 * 1024 * 1024),
    ("graph_notifications", "graph/notifications", 1024 * 1024 + 1),
    ("graph_lifecycle", "graph/lifecycle", 10**30),
    ("tickets", "tickets", 64 * 1024 + 1),
])
async def test_a_declared_length_over_the_limit_is_413_without_reading_the_body(functions, stack, name, route,
                                                                                declared):
    """Content-Length over the route's limit (1 MiB; 64 KiB for tickets): 413, body never read, nothing written."""
    req = request("POST", route, body=b"{}", headers={"Content-Length": str(declared)})
    status, body = await call(functions, name, req)
    assert status == 413 and body["error"]["code"] == "payloadTooLarge", body
    if name in PUBLIC:
        assert set(body["error"]) == {"code"}, body
    else:
        assert str(declared)[:10] in body["error"]["message"] or "Content-Length" in body["error"]["message"]
    assert req.reads == 0
    assert stack.sim.stats()["writes"] == 0 and await stack.all_flags() == []


@pytest.mark.parametrize("declared", ["abc", "-1", "1e6", "12 34", "0x10", "²"])
@pytest.mark.parametrize(("name", "route"), [("policy_verify", "policy/verify"), ("tickets", "tickets")])
async def test_a_malformed_content_length_is_400(functions, stack, declared, name, route):
    """A Content-Length that is not a whole number is a 400, naming the header where the route may say more
    than a code (the anonymous ticket webhook answers the code only)."""
    req = request("POST", route, body=b"{}", headers={"Content-Length": declared})
    status, body = await call(functions, name, req)
    assert status == 400 and body["error"]["code"] == "badRequest", body
    if name in PUBLIC:
        assert set(body["error"]) == {"code"}, body
    else:
        assert "Content-Length" in body["error"]["message"], body
    assert req.reads == 0


async def test_a_body_within_the_limit_is_still_read(functions, stack):
    """A declared length at the limit passes the check (the ticket then fails its signature: 401)."""
    req = request("POST", "tickets", body=b"{}", headers={"Content-Length": str(64 * 1024)})
    status, _ = await call(functions, "tickets", req)
    assert status == 401 and req.reads == 1


@pytest.mark.parametrize(("name", "route", "params", "named"), [
    ("flags_list", "flags", {"stauts": "pending"}, "stauts"),
    ("flags_list", "flags", {"status": "bogus"}, "status"),
    ("flags_export", "flags/export", {"status": "bogus"}, "status"),
    ("flags_export", "flags/export", {"limit": "5"}, "limit"),
    ("runs_list", "runs", {"status": "pending"}, "status"),
    ("runs_list", "runs", {"limit": "0"}, "limit"),
    ("runs_list", "runs", {"page": "2"}, "page"),
])
async def test_an_unknown_or_bad_query_parameter_is_400_naming_it(functions, stack, name, route, params, named):
    """GET flags, flags/export and runs refuse a parameter they do not define, or a bad value, by name."""
    status, body = await call(functions, name, request("GET", route, params=params))
    assert status == 400 and body["error"]["code"] == "badRequest", body
    assert named in body["error"]["message"]


@pytest.mark.parametrize(("name", "route", "params"), [
    ("flags_list", "flags", {"status": "pending", "limit": "10"}),
    ("flags_export", "flags/export", {"status": "cleared"}),
    ("runs_list", "runs", {"limit": "5"}),
    ("flags_list", "flags", {"code": "a-function-key"}),  # the host's key parameter reaches the function too
])
async def test_the_documented_query_parameters_still_work(functions, stack, name, route, params):
    """Every documented parameter (and the host's function-key `code`) is accepted."""
    resp = await functions[name].get_user_function()(request("GET", route, params=params))
    assert resp.status_code == 200, resp.get_body()
