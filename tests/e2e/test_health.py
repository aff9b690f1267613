"""GET /api/health: versions and whether Graph and storage answer, and nothing about the tenant."""
from __future__ import annotations

import json

from tests.e2e.stack import running_stack, tenant, user


async def test_health_reports_versions_and_reachability(azurite):
    """Both probes answer: 200 healthy with the package versions; the anonymous body names no tenant."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        status, text, _ = await stack.get("health")
        body = json.loads(text)
        assert status == 200 and body["status"] == "healthy"
        assert body["graph"] == {"ok": True} and body["storage"] == {"ok": True}
        assert body["versions"]["msgraph-sdk"] == "1.65.0" and body["versions"]["azure-functions"] == "1.26.0"
        assert stack.tenant_id not in text


async def test_health_is_degraded_when_graph_does_not_answer(azurite):
    """A Graph that drops every connection makes health 503 with the probe's error code."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        stack.sim.configure(fault_drop_rate=1.0)
        status, text, _ = await stack.get("health")
        body = json.loads(text)
        assert status == 503 and body["status"] == "degraded"
        assert body["graph"]["ok"] is False and body["storage"] == {"ok": True}
