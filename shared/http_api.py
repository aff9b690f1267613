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
from shared.actors import actor_from_principal
from shared.errors import InputError
from shared.health import HealthResult
from shared.principal import Principal
from shared.services import Services
from shared.web import Answer, ok, read_body, read_json_object, refuse_unknown_params

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
    principal: Principal | None = None  # who App Service vouched for (None on PUBLIC routes)

    @classmethod
    def from_parts(cls, *, method: str, url: str, headers: dict[str, str], params: dict[str, str],
                   route_params: dict[str, str], body: bytes | None, principal: Principal | None = None) -> Request:
        return cls(method=method.upper(), url=url, headers={k.lower(): v for k, v in headers.items()},
                   params=params, route_params=route_params, body=body or b"", principal=principal)

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
    from shared.graph.policy_reads import read_fido2_raw

    graph = services.graph  # the first probe is the tenant check itself (one Graph request, wrongTenant degrades)
    return await services.health.get(
        lambda: read_fido2_raw(graph) if graph.tenant_confirmed else graph.confirm_tenant(), services.store.ping)


async def health(services: Services, req: Request) -> Answer:
    """Healthy (200) or degraded (503), from the cached probe, so anonymous callers cannot make Graph calls.

    Anonymous, so it says nothing else: no versions, no mode, no tenant, no probe detail, no secret names.
    A secret setting that cannot be used (unset, a placeholder, an unresolved Key Vault reference) degrades it.
    """
    result = await _probe_health(services)
    healthy = result.healthy and not services.settings.unavailable_secrets()
    body = {"status": "healthy" if healthy else "degraded", "checkedSecondsAgo": result.age_seconds()}
    return ok(body, 200 if healthy else 503)


async def health_details(services: Services, req: Request) -> Answer:
    """For readers: the cached probe's results, versions, the enforcement mode and the secret settings that
    cannot be used, by name and reason (never a value); always 200."""
    result = await _probe_health(services)
    unavailable = services.settings.unavailable_secrets()
    return ok({
        "status": "healthy" if result.healthy and not unavailable else "degraded",
        "checkedSecondsAgo": result.age_seconds(),
        "versions": {"passkeyGuard": __version__, "python": platform.python_version(),
                     "azure-functions": _version("azure-functions"), "msgraph-sdk": _version("msgraph-sdk"),
                     "azure-data-tables": _version("azure-data-tables")},
        "enforcementMode": services.settings.enforcement_mode,
        "graph": result.graph,
        "storage": result.storage,
        "unavailableSecrets": unavailable,
    })


async def runs_list(services: Services, req: Request) -> Answer:
    """Run history, newest first, paged with an opaque token."""
    refuse_unknown_params(req.params, "limit", "pageToken")
    from shared.policy.runs import list_runs

    limit = _int_param(req, "limit", 20, low=1, high=100)
    return ok(await list_runs(services, limit=limit, page_token=req.params.get("pageToken") or None))


def _job_answer(queued: dict[str, Any], req: Request) -> Answer:
    """202 with the run id, and where to read its outcome."""
    return Answer(status=202, body={**queued, "location": f"/api/runs/{queued['runId']}"},
                  headers={"Location": _run_url(req, queued["runId"])})


def _run_url(req: Request, run_id: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(req.url)
    return urlunsplit((parts.scheme, parts.netloc, f"/api/runs/{run_id}", "", ""))


async def run_get(services: Services, req: Request) -> Answer:
    """One run by id: a queued or running job, or how it ended (plan id and diff, apply result or refusal)."""
    from shared.policy.jobs import public_run

    run_id = req.route_params.get("runId", "")
    if not (len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id)):
        raise InputError("runId must be a run id (32 lowercase hex digits), as POST /api/policy/plan|apply return")
    from shared.policy.runs import with_details

    return ok(await with_details(services, public_run(await services.store.runs.get(run_id))))


async def policy_verify(services: Services, req: Request) -> Answer:
    """Run the compliance checks now; the report comes as JSON, with Markdown beside it."""
    from shared.policy.jobs import refuse_adhoc_document
    from shared.policy.verify import verify
    from shared.schemas.bodies import DocumentBody

    body = read_body(req.body, DocumentBody)  # {"document": ...} only with ALLOW_ADHOC_DOCUMENTS
    refuse_adhoc_document(services, body.document)
    return ok(await verify(services, trigger="http", document=body.document,
                           actor=actor_from_principal(req.principal)))


async def policy_plan(services: Services, req: Request) -> Answer:
    """Check the desired state, queue the plan as a job and answer 202 with its run id."""
    from shared.policy.jobs import submit_plan
    from shared.schemas.bodies import DocumentBody

    body = read_body(req.body, DocumentBody)
    return _job_answer(await submit_plan(services, body.document, actor=actor_from_principal(req.principal)),
                       req)


async def policy_apply(services: Services, req: Request) -> Answer:
    """Refuse at once what can be refused (audit mode, unknown, applied or stale plan, acceptance missing
    or not matching), else queue the apply as a job and answer 202 with its run id."""
    from shared.policy.jobs import submit_apply
    from shared.schemas.bodies import ApplyBody

    body = read_body(req.body, ApplyBody)
    lockout, no_exclusion = body.acceptLockout, body.acceptNoEmergencyExclusion
    return _job_answer(await submit_apply(services, body.planId,
                                          accept_lockout=lockout.model_dump() if lockout else None,
                                          accept_no_emergency_exclusion=no_exclusion.model_dump() if no_exclusion
                                          else None,
                                          actor=actor_from_principal(req.principal)),
                       req)


# ----------------------------------------------------------------------------- UPN changes
def _validation_echo(token: str) -> Answer:
    """Graph's handshake answer: the token as text/plain, with nosniff so no browser renders the echo of a
    caller-chosen string as HTML or script."""
    return Answer(status=200, text=token, mimetype="text/plain", headers={"X-Content-Type-Options": "nosniff"})


async def graph_notifications(services: Services, req: Request) -> Answer:
    """Graph change notifications: answer the handshake, check every clientState, enqueue, 202.

    No Graph call happens here: Graph wants an answer within 3 s, and slow endpoints lose notifications.
    """
    from shared.telemetry import bind_run
    from shared.upn.graph_notifications import parse_change_notifications, validation_token
    from shared.upn.messages import enqueue_notices

    token = validation_token(req.params)
    if token is not None:
        return _validation_echo(token)
    bind_run()
    settings = services.settings
    batch = parse_change_notifications(
        req.body, client_state=settings.secret("notification_client_state"),
        tenant_id=settings.tenant_id)
    for rejected in batch.rejected:
        log.warning("dropped notification item %d (%s): %s", rejected.index, rejected.kind, rejected.reason)
    queued = await enqueue_notices(services, batch.accepted)
    return Answer(status=202, body={"accepted": len(batch.accepted), "rejected": len(batch.rejected),
                                    "usersQueued": queued})


async def graph_lifecycle(services: Services, req: Request) -> Answer:
    """Graph lifecycle notifications: handshake, clientState, then queue the work and answer 202."""
    from shared.upn.graph_notifications import parse_lifecycle_notifications, validation_token
    from shared.upn.messages import enqueue_lifecycle

    token = validation_token(req.params)
    if token is not None:
        return _validation_echo(token)
    settings = services.settings
    events = parse_lifecycle_notifications(
        req.body, client_state=settings.secret("notification_client_state"),
        tenant_id=settings.tenant_id)
    queued = await enqueue_lifecycle(services, events)
    return Answer(status=202, body={"accepted": len(events), "queued": queued})


async def tickets(services: Services, req: Request) -> Answer:
    """The ticketing system's webhook: HMAC and timestamp checked before anything else, then once per
    event id: `upn_changed` and `recheck_user` answer with the user's flag, `verify_policy` with the report."""
    from datetime import UTC, datetime

    from shared.upn.ticket_webhook import verify_ticket
    from shared.upn.tickets import ticket_action

    settings = services.settings
    event = verify_ticket(req.body, req.headers,
                          secret=settings.secret("ticket_webhook_secret"),
                          now=datetime.now(UTC))
    return ok(await ticket_action(services, event))


async def flags_list(services: Services, req: Request) -> Answer:
    """UPN-change cases, optionally of one status, paged."""
    refuse_unknown_params(req.params, "status", "limit", "pageToken")
    from shared.upn.flag_views import list_flags

    limit = _int_param(req, "limit", 100, low=1, high=1000)
    return ok(await list_flags(services, status=req.params.get("status") or None, limit=limit,
                               page_token=req.params.get("pageToken") or None))


async def flags_export(services: Services, req: Request) -> Answer:
    """Every flag as CSV for the helpdesk."""
    refuse_unknown_params(req.params, "status")
    from shared.upn.flag_views import flags_csv

    text = await flags_csv(services, status=req.params.get("status") or None)
    return Answer(status=200, text=text, mimetype="text/csv",
                  headers={"Content-Disposition": 'attachment; filename="passkey-guard-flags.csv"'})


async def flags_approve_removal(services: Services, req: Request) -> Answer:
    """An administrator approves the stale-passkey removal of flags waiting above the per-run cap; the next
    tracker run deletes them. Strict body `{"userIds": [...]}`: anything else is a 400 naming the field."""
    from shared.schemas.bodies import ApprovalBody
    from shared.upn.tracker import approve_removals

    ids = read_body(req.body, ApprovalBody).userIds  # 1 to 1000 ids of 1 to 128 characters
    return ok(await approve_removals(services, list(ids), by="http"))

