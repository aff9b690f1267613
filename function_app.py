"""Passkey Guard's Azure Functions: wiring only.

Each function turns its trigger input into plain values, calls one use case in `shared/`, and maps the
result to a response or a log line. Imports of the SDKs happen inside the use cases, on first call, so
indexing stays fast (the worker has 30 s to start; see bench/cold_start.py).
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import azure.functions as func

from shared import http_api
from shared.principal import Access, authorize
from shared.services import Services
from shared.web import MAX_BODY_BYTES, MAX_TICKET_BYTES, Answer, error_answer

#: An HTTP use case of shared.http_api: services and a plain request in, an Answer out.
Handler = Callable[[Services, http_api.Request], Awaitable[Answer]]

# Callers need no function key: App Service Authentication (infra/app/function.bicep) validates their
# Entra token and each route declares the app role it needs (`access=`), checked in _serve.
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
log = logging.getLogger("shared.function_app")


def _http(answer: Answer) -> func.HttpResponse:
    return func.HttpResponse(body=answer.encoded(), status_code=answer.status, headers=answer.headers,
                             mimetype=answer.mimetype)


async def _serve(handler: Handler, req: func.HttpRequest, *, access: Access,
                 body_limit: int = MAX_BODY_BYTES) -> func.HttpResponse:
    """Run one HTTP use case from shared.http_api for a caller with `access`, refusing a declared body over
    `body_limit` unread; every failure becomes a JSON error body (a code only on PUBLIC routes)."""
    from shared.services import get_services
    from shared.web import refuse_declared_oversize

    name = handler.__name__  # the function's name too: the logs and the access check name the route
    try:
        principal = authorize(access, req.headers, auth_enabled=get_services().settings.auth_enabled, route=name)
        refuse_declared_oversize(req.headers, limit=body_limit)  # before req.get_body(): never read
        answer = await handler(get_services(), http_api.Request.from_parts(
            method=req.method, url=req.url, headers=dict(req.headers), params=dict(req.params),
            route_params=dict(req.route_params), body=req.get_body(), principal=principal))
    except Exception as exc:  # the boundary: nothing escapes as a stack trace
        answer = error_answer(exc, public=access is Access.PUBLIC)
    return _http(answer)


# ----------------------------------------------------------------------------- operations
@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve(http_api.health, req, access=Access.PUBLIC)


@app.route(route="health/details", methods=["GET"])
async def health_details(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve(http_api.health_details, req, access=Access.READER)


@app.route(route="runs", methods=["GET"])
async def runs_list(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve(http_api.runs_list, req, access=Access.READER)


@app.route(route="runs/{runId}", methods=["GET"])
async def run_get(req: func.HttpRequest) -> func.HttpResponse:
    """One run: how a queued plan or apply job ended."""
    return await _serve(http_api.run_get, req, access=Access.READER)


# ----------------------------------------------------------------------------- policy as code
@app.route(route="policy/verify", methods=["POST"])
async def policy_verify(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve(http_api.policy_verify, req, access=Access.READER)


@app.route(route="policy/plan", methods=["POST"])
async def policy_plan(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve(http_api.policy_plan, req, access=Access.ADMIN)


@app.route(route="policy/apply", methods=["POST"])
async def policy_apply(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve(http_api.policy_apply, req, access=Access.ADMIN)


@app.timer_trigger(schedule="%POLICY_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def policy_enforcement(timer: func.TimerRequest) -> None:
    """Scheduled compliance: verify in audit mode; plan and apply when safe in enforce mode."""
    from shared.policy.scheduled import scheduled_run
    from shared.services import get_services

    result = await scheduled_run(get_services(), past_due=timer.past_due)
    log.info("policy_enforcement finished: run %s result %s", result["runId"], result["result"])


@app.queue_trigger(arg_name="msg", queue_name="policy-jobs", connection="STATE_STORAGE")
async def policy_jobs(msg: func.QueueMessage) -> None:
    """A plan or apply queued by POST /api/policy/plan|apply, run once, its outcome on the run."""
    from shared.policy.jobs import run_job
    from shared.services import get_services

    result = await run_job(get_services(), msg.get_body())
    log.info("policy_jobs: %s", result)


# ----------------------------------------------------------------------------- UPN changes
@app.route(route="graph/notifications", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_notifications(req: func.HttpRequest) -> func.HttpResponse:
    """Graph change notifications (validated by clientState, not by a function key)."""
    return await _serve(http_api.graph_notifications, req, access=Access.PUBLIC)


@app.route(route="graph/lifecycle", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def graph_lifecycle(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve(http_api.graph_lifecycle, req, access=Access.PUBLIC)


@app.route(route="tickets", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def tickets(req: func.HttpRequest) -> func.HttpResponse:
    """The ticketing system's webhook (authenticated by its HMAC signature)."""
    return await _serve(http_api.tickets, req, access=Access.PUBLIC, body_limit=MAX_TICKET_BYTES)


@app.route(route="flags", methods=["GET"])
async def flags_list(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve(http_api.flags_list, req, access=Access.READER)


@app.route(route="flags/export", methods=["GET"])
async def flags_export(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve(http_api.flags_export, req, access=Access.READER)


@app.route(route="flags/approve-removal", methods=["POST"])
async def flags_approve_removal(req: func.HttpRequest) -> func.HttpResponse:
    """Admin: approve the stale-passkey removal of flags waiting above STALE_PASSKEY_REMOVAL_MAX_PER_RUN."""
    return await _serve(http_api.flags_approve_removal, req, access=Access.ADMIN)


@app.event_grid_trigger(arg_name="event")
async def upn_events(event: func.CloudEvent) -> None:
    """Graph user events delivered through an Event Grid partner topic (CloudEvents schema: the library
    hands a func.CloudEvent, or a func.EventGridEvent for an Event Grid schema delivery)."""
    from shared.services import get_services
    from shared.upn.event_grid import intake_event_grid
    from shared.upn.event_grid_events import event_grid_trigger_values

    await intake_event_grid(get_services(), **event_grid_trigger_values(event))


@app.queue_trigger(arg_name="msg", queue_name="upn-changes", connection="STATE_STORAGE")
async def upn_processor(msg: func.QueueMessage) -> None:
    """One message of up to 20 users (or lifecycle work): the idempotent processor."""
    from shared.services import get_services
    from shared.upn.dispatch import handle_message

    result = await handle_message(get_services(), msg.get_body(), dequeue_count=msg.dequeue_count or 1)
    log.info("upn_processor: %s", {k: v for k, v in result.items() if k != "decisions"})


@app.queue_trigger(arg_name="msg", queue_name="passkey-reads", connection="STATE_STORAGE")
async def passkey_reads(msg: func.QueueMessage) -> None:
    """The slow lane: up to 20 changed users' passkeys, read at Graph's pace, then each case settled."""
    from shared.services import get_services
    from shared.upn.dispatch import handle_passkey_message

    result = await handle_passkey_message(get_services(), msg.get_body(), dequeue_count=msg.dequeue_count or 1)
    log.info("passkey_reads: %s", {k: v for k, v in result.items() if k != "decisions"})


@app.timer_trigger(schedule="%SWEEP_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def delta_sweep(timer: func.TimerRequest) -> None:
    """The backstop for lost notifications: users/delta from the stored link, checkpointed per page."""
    from shared.services import get_services
    from shared.upn.sweep import sweep

    result = await sweep(get_services(), trigger="timer")
    log.info("delta_sweep: %s", result)


@app.timer_trigger(schedule="%TRACKER_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def reregistration_tracker(timer: func.TimerRequest) -> None:
    """Moves open UPN-change flags on once users have re-registered their passkey."""
    from shared.services import get_services
    from shared.upn.tracker import track_flags

    log.info("reregistration_tracker: %s", await track_flags(get_services()))


@app.timer_trigger(schedule="%EVENTS_PURGE_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def events_purge(timer: func.TimerRequest) -> None:
    """Daily housekeeping: deletes expired idempotency keys (ticket and policy-job claims), since Table Storage has
    no TTL, and reclaims gone users' slots in the snapshots and holders rows."""
    from shared.events_purge import purge_expired_events
    from shared.services import get_services

    log.info("events_purge: %s", await purge_expired_events(get_services()))


@app.timer_trigger(schedule="%SUBSCRIPTION_SCHEDULE%", arg_name="timer", run_on_startup=True, use_monitor=True)
async def subscription_manager(timer: func.TimerRequest) -> None:
    """Creates the /users change-notification subscription and renews it well before it expires.

    Also runs when the host starts, so a new deployment subscribes at once instead of up to 6 h later; a
    fresh subscription costs one Table read, and the subscription lease lets only one starting instance create.
    """
    from shared.errors import ConflictError
    from shared.services import get_services
    from shared.upn.subscriptions import ensure_subscription

    try:
        result = await ensure_subscription(get_services())
    except ConflictError:
        log.info("subscription_manager: another instance holds the subscription lease; leaving it the work")
        return
    log.info("subscription_manager: %s (expires %s)", result["action"], result.get("expirationDateTime"))
