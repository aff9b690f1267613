"""`POST /$batch`: up to 20 requests dispatched through the same handlers as direct calls.

Each item is metered, faulted and throttled on its own (an item can be a 429 with `Retry-After` inside
the outer 200); the envelope itself costs nothing, but can itself be refused whole with a 429 or 503
(`fault_batch_429_rate`, `fault_batch_503_rate`) before any item runs. Item URLs are relative to the version (`/users/…`
or `users/…`). An absolute item URL gets a per-item 400 as on Graph (the trap in graph-contract.md
pitfall 5) unless the `batch_allow_absolute_urls` knob is on, when absolute URLs on the simulator's
own host are accepted. With any `dependsOn` the items run one by one in the order given and an item
whose dependency failed gets 424; otherwise they run concurrently. Responses come back shuffled
(`batch_shuffle_responses`), since Graph promises no order.

Latency: each item waits its own draw (and its own page-size part) like a direct call, so concurrent
items make the envelope wait for the slowest of them and `dependsOn` items wait for their sum; the
envelope adds its own draw plus `latency_per_item_ms` per request at the front door. Graph answers a
batch only when every item is done, and runs dependent items one after another.
"""
from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from graphsim.errors import GraphApiError, bad_request
from graphsim.routing import SimRequest, SimResponse, parse_query, split_path

if TYPE_CHECKING:
    from graphsim.app import SimServer

MAX_REQUESTS = 20
METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")
_ITEM_HEADERS = ("content-type", "retry-after", "location", "x-ms-throttle-scope", "x-ms-throttle-information",
                 "x-ms-throttle-limit-percentage", "x-ms-resource-unit")


def _item_error(status: int, code: str, message: str) -> SimResponse:
    return SimResponse(status, {"error": {"code": code, "message": message}})


async def batch(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """Run a JSON batch and answer `{"responses": [...]}`."""
    if req.in_batch:
        raise bad_request("A $batch request cannot be nested in a batch.")
    body = req.json_object()
    items = body.get("requests")
    if not isinstance(items, list) or not items:
        raise bad_request("Invalid batch payload format: 'requests' must be a non-empty array.")
    if len(items) > MAX_REQUESTS:
        raise bad_request(f"The number of batch requests exceeds the limit of {MAX_REQUESTS}.")
    ids: list[str] = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
            raise bad_request("Invalid batch payload format: every request needs a string 'id'.")
        if item["id"] in ids:
            raise bad_request(f"Batch request ids must be unique; '{item['id']}' repeats.")
        if str(item.get("method", "")).upper() not in METHODS:
            raise bad_request(f"Invalid batch payload format: bad method in request '{item['id']}'.")
        if not isinstance(item.get("url"), str) or not item["url"]:
            raise bad_request(f"Invalid batch payload format: request '{item['id']}' has no url.")
        headers = {str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()}
        if item.get("body") is not None and "content-type" not in headers:
            raise bad_request(f"Request '{item['id']}' has a body but no Content-Type header.")
        ids.append(item["id"])
    sequential = False
    for item in items:
        deps = item.get("dependsOn")
        if deps is None:
            continue
        if not isinstance(deps, list) or any(d not in ids or d == item["id"] for d in deps):
            raise bad_request(f"Request '{item['id']}' has an invalid dependsOn.")
        if any(ids.index(d) > ids.index(item["id"]) for d in deps):
            raise bad_request(f"Request '{item['id']}' depends on a later request.")
        sequential = True
    sim.stats.batch_requests += 1
    sim.stats.batch_items += len(items)
    results: dict[str, SimResponse] = {}
    if sequential:
        for item in items:
            failed = [d for d in item.get("dependsOn") or [] if not 200 <= results[d].status < 300]
            if failed:
                results[item["id"]] = _item_error(424, "FailedDependency", f"Dependency {failed[0]} failed.")
            else:
                results[item["id"]] = await _run(sim, req, item)
    else:
        answers = await asyncio.gather(*(_run(sim, req, item) for item in items))
        results = dict(zip(ids, answers, strict=True))
    order = list(ids)
    if sim.config.batch_shuffle_responses:
        sim.batch_rng.shuffle(order)
    return SimResponse(200, {"responses": [_envelope(i, results[i]) for i in order]})


async def _run(sim: SimServer, outer: SimRequest, item: dict[str, Any]) -> SimResponse:
    url: str = item["url"]
    parts = urlsplit(url)
    path = parts.path
    if parts.scheme:
        allowed = sim.config.batch_allow_absolute_urls and parts.netloc.lower() == urlsplit(outer.root).netloc.lower()
        prefix = f"/{outer.version}/"
        if not allowed or not path.startswith(prefix):
            return _item_error(400, "BadRequest", f"Invalid request URL '{url}': batch request URLs must be "
                                                  "relative to the version, e.g. '/users/{id}'.")
        path = path[len(prefix) - 1:]
    headers = {str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()}
    if "authorization" in outer.headers:
        headers["authorization"] = outer.headers["authorization"]
    headers.setdefault("client-request-id", outer.headers.get("client-request-id", ""))
    raw_body = item.get("body")
    data = b"" if raw_body is None else json.dumps(raw_body).encode()
    sub = SimRequest(method=str(item["method"]).upper(), segments=split_path(path), query=parse_query(parts.query),
                     headers=headers, body=data, root=outer.root, version=outer.version, in_batch=True)
    delay = sim.faults.latency_s()  # each item waits its own draw, so the envelope waits for the slowest
    if delay > 0:
        await asyncio.sleep(delay)
    try:
        resp = await sim.dispatch(sub)
    except GraphApiError as exc:  # dispatch answers errors itself; this is a safety net
        resp = _item_error(exc.status, exc.code, exc.message)
    size = sim.faults.size_latency_s(resp.items())
    if size > 0:
        await asyncio.sleep(size)
    sim.stats.latency(delay, size)
    return resp


def _envelope(item_id: str, resp: SimResponse) -> dict[str, Any]:
    out: dict[str, Any] = {"id": item_id, "status": resp.status,
                           "headers": {k: v for k, v in resp.headers.items() if k.lower() in _ITEM_HEADERS}}
    if resp.body is not None:
        out["headers"].setdefault("Content-Type", "application/json")
        out["body"] = resp.body
    return out
