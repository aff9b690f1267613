"""GET /api/health: anonymous, answered from a cached probe, and saying nothing but the status;
GET /api/health/details (PasskeyGuard.Reader): versions, mode and the probe results."""
from __future__ import annotations

import asyncio
import json

from shared.principal import READER_ROLE, encode_principal
from tests.e2e.stack import running_stack, tenant, user

READER = {"X-MS-CLIENT-PRINCIPAL": encode_principal([READER_ROLE])}


async def test_health_reports_versions_and_reachability(azurite):
    """Both probes answer: the details (reader) say healthy with the package versions, mode and probes."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        status, text, _ = await stack.get("health/details", headers=READER)
        body = json.loads(text)
        assert status == 200 and body["status"] == "healthy"
        assert body["graph"] == {"ok": True} and body["storage"] == {"ok": True}
        assert body["versions"]["msgraph-sdk"] == "1.65.0" and body["versions"]["azure-functions"] == "1.26.0"
        assert body["enforcementMode"] == "audit"
        assert stack.tenant_id not in text


async def test_anonymous_health_says_only_the_status(azurite):
    """The anonymous body reveals no versions, no mode and no probe detail: the status and the cache age."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        status, text, _ = await stack.get("health", principal=None)
        body = json.loads(text)
        assert status == 200 and set(body) == {"status", "checkedSecondsAgo"} and body["status"] == "healthy"
        assert isinstance(body["checkedSecondsAgo"], int) and body["checkedSecondsAgo"] >= 0


async def test_anonymous_health_spends_at_most_one_graph_call(azurite):
    """Forty anonymous health requests, twenty of them at once, make at most one Graph request in all
    (graphsim's request counter): the probe result is cached and concurrent requests share one probe."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        stack.sim.reset_stats()
        answers = await asyncio.gather(*(stack.get("health", principal=None) for _ in range(20)))
        answers += [await stack.get("health", principal=None) for _ in range(20)]
        assert {status for status, _, _ in answers} == {200}
        assert stack.sim.stats()["http_requests"] <= 1


async def test_details_need_the_reader_role(azurite):
    """GET /api/health/details without a principal is 401; the anonymous route stays open."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        status, text, _ = await stack.get("health/details", principal=None)
        assert status == 401 and json.loads(text)["error"]["code"] == "unauthenticated"


async def test_health_is_degraded_when_graph_does_not_answer(azurite):
    """A Graph that drops every connection makes health 503 'degraded'; the details carry the probe's code."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        stack.sim.configure(fault_drop_rate=1.0)
        status, text, _ = await stack.get("health", principal=None)
        assert status == 503 and json.loads(text)["status"] == "degraded"
        status, text, _ = await stack.get("health/details", headers=READER)
        body = json.loads(text)
        assert status == 200 and body["status"] == "degraded"
        assert body["graph"]["ok"] is False and body["storage"] == {"ok": True}
