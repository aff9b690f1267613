"""The HTTP use cases behind `function_app.py`'s routes, on plain values (no azure.functions here).

Each handler takes the services and a `Request`, and returns an `Answer`. Domain errors propagate to
the boundary in `function_app._serve`, which maps them with `shared.web.error_answer`.
"""
from __future__ import annotations

import logging
import platform
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from shared import __version__
from shared.errors import InputError
from shared.health import HealthResult
from shared.services import Services
from shared.web import Answer, ok, read_json_object

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """An HTTP request as plain values; header names are lower-cased."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    route_params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def from_parts(cls, *, method: str, url: str, headers: dict[str, str], params: dict[str, str],
                   route_params: dict[str, str], body: bytes | None) -> Request:
        return cls(method=method.upper(), url=url, headers={k.lower(): v for k, v in headers.items()},
                   params=params, route_params=route_params, body=body or b"")

    def json(self) -> dict[str, Any]:
        return read_json_object(self.body)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _int_param(req: Request, name: str, default: int, *, low: int, high: int) -> int:
    raw = req.params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not low <= int(raw) <= high:
        raise InputError(f"query parameter {name} must be a whole number from {low} to {high}")
    return int(raw)


async def _probe_health(services: Services) -> HealthResult:
    """Whether Graph and storage answer, from the process's cache (at most one probe per TTL)."""
    from shared.policy.reader import read_fido2_raw

    return await services.health.get(lambda: read_fido2_raw(services.graph), services.store.ping)


async def health(services: Services, req: Request) -> Answer:
    """Healthy (200) or degraded (503), from the cached probe, so anonymous callers cannot make Graph calls.

    Anonymous, so it says nothing else: no versions, no mode, no tenant, no probe detail.
    """
    result = await _probe_health(services)
    body = {"status": "healthy" if result.healthy else "degraded", "checkedSecondsAgo": result.age_seconds()}
    return ok(body, 200 if result.healthy else 503)


async def health_details(services: Services, req: Request) -> Answer:
    """For readers: the cached probe's results with versions and the enforcement mode (always 200)."""
    result = await _probe_health(services)
    return ok({
        "status": "healthy" if result.healthy else "degraded",
        "checkedSecondsAgo": result.age_seconds(),
        "versions": {"passkeyGuard": __version__, "python": platform.python_version(),
                     "azure-functions": _version("azure-functions"), "msgraph-sdk": _version("msgraph-sdk"),
                     "azure-data-tables": _version("azure-data-tables")},
        "enforcementMode": services.settings.enforcement_mode,
        "graph": result.graph,
        "storage": result.storage,
    })


async def runs_list(services: Services, req: Request) -> Answer:
    """Run history, newest first, paged with an opaque token."""
    from shared.policy.service import list_runs

    limit = _int_param(req, "limit", 20, low=1, high=100)
    return ok(await list_runs(services, limit=limit, page_token=req.params.get("pageToken") or None))


async def policy_verify(services: Services, req: Request) -> Answer:
    """Run the compliance checks now; the report comes as JSON, with Markdown beside it."""
    from shared.policy.service import verify

    body = req.json()  # optional; {"document": {...}} verifies against that document instead of POLICY_FILE
    return ok(await verify(services, trigger="http", document=body.get("document")))


async def policy_plan(services: Services, req: Request) -> Answer:
    """Plan against the live tenant, store the plan, and return its id and diff."""
    from shared.policy.service import plan

    body = req.json()
    return ok(await plan(services, trigger="http", document=body.get("document")), 201)


async def policy_apply(services: Services, req: Request) -> Answer:
    """Apply a stored plan by id while the tenant still matches the plan's starting state (else 409)."""
    from shared.policy.service import apply_stored_plan

    body = read_json_object(req.body, allow_empty=False)
    plan_id = body.get("planId")
    if not isinstance(plan_id, str) or not plan_id:
        raise InputError("planId: required, the id returned by POST /api/policy/plan")
    accept = body.get("acceptLockout", False)
    if not isinstance(accept, bool):
        raise InputError("acceptLockout: must be true or false")
    return ok(await apply_stored_plan(services, plan_id, accept_lockout=accept, trigger="http"))


# ----------------------------------------------------------------------------- UPN changes
async def graph_notifications(services: Services, req: Request) -> Answer:
    """Graph change notifications: answer the handshake, check every clientState, enqueue, 202.

    No Graph call happens here: Graph wants an answer within 3 s, and slow endpoints lose notifications.
    """
    from shared.telemetry import bind_run
    from shared.upn.intake import parse_change_notifications, validation_token
    from shared.upn.service import enqueue_notices

    token = validation_token(req.params)
    if token is not None:
        return Answer(status=200, text=token, mimetype="text/plain")
    bind_run()
    settings = services.settings
    batch = parse_change_notifications(
        req.body, client_state=settings.require("notification_client_state", "NOTIFICATION_CLIENT_STATE"),
        tenant_id=settings.tenant_id)
    for rejected in batch.rejected:
        log.warning("dropped notification item %d (%s): %s", rejected.index, rejected.kind, rejected.reason)
    queued = await enqueue_notices(services, batch.accepted)
    return Answer(status=202, body={"accepted": len(batch.accepted), "rejected": len(batch.rejected),
                                    "usersQueued": queued})


async def graph_lifecycle(services: Services, req: Request) -> Answer:
    """Graph lifecycle notifications: handshake, clientState, then queue the work and answer 202."""
    from shared.upn.intake import parse_lifecycle_notifications, validation_token
    from shared.upn.service import enqueue_lifecycle

    token = validation_token(req.params)
    if token is not None:
        return Answer(status=200, text=token, mimetype="text/plain")
    settings = services.settings
    events = parse_lifecycle_notifications(
        req.body, client_state=settings.require("notification_client_state", "NOTIFICATION_CLIENT_STATE"),
        tenant_id=settings.tenant_id)
    queued = await enqueue_lifecycle(services, events)
    return Answer(status=202, body={"accepted": len(events), "queued": queued})


async def tickets(services: Services, req: Request) -> Answer:
    """The ticketing system's webhook: HMAC and timestamp checked before anything else, then once per
    event id: `upn_changed` and `recheck_user` answer with the user's flag, `verify_policy` with the report."""
    from datetime import UTC, datetime

    from shared.upn.intake import verify_ticket
    from shared.upn.service import ticket_action

    settings = services.settings
    event = verify_ticket(req.body, req.headers,
                          secret=settings.require("ticket_webhook_secret", "TICKET_WEBHOOK_SECRET"),
                          now=datetime.now(UTC))
    if not await services.store.claim_event(settings.tenant_id, f"ticket:{event.event_id}", ttl_seconds=7 * 86400):
        return ok({"eventId": event.event_id, "duplicate": True,
                   "message": "this event id was already handled; nothing was done again"})
    try:
        result = await ticket_action(services, event)
    except Exception:
        await services.store.forget_event(settings.tenant_id, f"ticket:{event.event_id}")  # let a retry work
        raise
    return ok({"eventId": event.event_id, "action": event.action, "duplicate": False, **result})


async def flags_list(services: Services, req: Request) -> Answer:
    """UPN-change cases, optionally of one status, paged."""
    from shared.upn.service import list_flags

    limit = _int_param(req, "limit", 100, low=1, high=1000)
    return ok(await list_flags(services, status=req.params.get("status") or None, limit=limit,
                               page_token=req.params.get("pageToken") or None))


async def flags_export(services: Services, req: Request) -> Answer:
    """Every flag as CSV for the helpdesk."""
    from shared.upn.service import flags_csv

    text = await flags_csv(services, status=req.params.get("status") or None)
    return Answer(status=200, text=text, mimetype="text/csv",
                  headers={"Content-Disposition": 'attachment; filename="passkey-guard-flags.csv"'})
