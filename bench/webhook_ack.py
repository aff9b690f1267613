"""Webhook acknowledgement latency: the `graph_notifications` function, validate and enqueue.

    python -m bench.webhook_ack --json [--notifications 1000]

Each notification is one POST as Graph sends it (one user change, the right clientState), over HTTP to
the function app served on loopback by devhost (as the Functions host serves it: the request becomes a real
`azure.functions.HttpRequest` for `function_app.graph_notifications`); the handler checks the clientState,
queues the user to Azurite and answers 202. Latency per call is measured by the sender, from the request
to the end of the answer, on one kept-alive connection; `p50_ms` and `p99_ms` over `--notifications`
calls after a few warm-up calls (the first call's latency, imports included, is `first_call_ms`).
Graph wants a 2xx within 3 s; the target here is p99 <= 50 ms.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
import uuid
from typing import Any

from bench.common import BENCH_SETTINGS, base_parser, emit, machine, tenant_doc

WARM_UP = 10


def notification(tenant_id: str, user_id: str, client_state: str) -> bytes:
    """One change notification for one user, in Graph's shape."""
    return json.dumps({"value": [{
        "subscriptionId": "11111111-0000-4000-8000-000000000001", "clientState": client_state,
        "changeType": "updated", "resource": f"Users/{user_id}", "tenantId": tenant_id,
        "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
        "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{user_id}", "id": user_id,
                         "organizationId": tenant_id}}]}).encode()


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def run(count: int) -> dict[str, Any]:
    import httpx

    from devhost.stack import local_stack

    doc = tenant_doc(users=0)
    async with local_stack(doc, settings=BENCH_SETTINGS, drain=False) as stack:
        assert stack.host is not None
        url = f"{stack.host.url}/api/graph/notifications"
        state = stack.settings["NOTIFICATION_CLIENT_STATE"]
        async with httpx.AsyncClient(headers={"Content-Type": "application/json"}, timeout=30) as graph:

            async def post() -> float:
                body = notification(doc["tenantId"], str(uuid.uuid4()), state)
                t0 = time.perf_counter()
                resp = await graph.post(url, content=body)
                elapsed = (time.perf_counter() - t0) * 1000
                if resp.status_code != 202:
                    raise RuntimeError(f"notification answered {resp.status_code}: {resp.text[:300]!r}")
                return elapsed

            first_ms = await post()
            for _ in range(WARM_UP):
                await post()
            samples = [await post() for _ in range(count)]
        queued = await stack.services.store.queue.peek_count()
    return {
        "benchmark": "webhook_ack", "notifications": count, "transport": "HTTP on loopback (devhost)",
        "p50_ms": round(percentile(samples, 50), 2), "p99_ms": round(percentile(samples, 99), 2),
        "max_ms": round(max(samples), 2), "mean_ms": round(statistics.fmean(samples), 2),
        "first_call_ms": round(first_ms, 1), "messages_queued": queued,
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], graph=False)  # the webhook answers without calling Graph
    parser.add_argument("--notifications", type=int, default=1000)
    args = parser.parse_args(argv)
    result = asyncio.run(run(50 if args.smoke else max(1, args.notifications)))
    emit(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
