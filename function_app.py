"""Passkey Guard's Azure Functions: wiring only.

Each function turns its trigger input into plain values, calls one use case in `shared/`, and maps the
result to a response or a log line. Imports of the SDKs happen inside the use cases, on first call, so
indexing stays fast (the worker has 30 s to start; see bench/cold_start.py).
"""
from __future__ import annotations

import logging

import azure.functions as func

from shared.web import Answer, error_answer

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("passkey_guard")


def _http(answer: Answer) -> func.HttpResponse:
    return func.HttpResponse(body=answer.encoded(), status_code=answer.status, headers=answer.headers,
                             mimetype=answer.mimetype)


async def _serve(handler_name: str, req: func.HttpRequest) -> func.HttpResponse:
    """Run one HTTP use case from shared.http_api; every failure becomes a JSON error body."""
    from shared import http_api
    from shared.services import get_services

    try:
        handler = getattr(http_api, handler_name)
        answer = await handler(get_services(), http_api.Request.from_parts(
            method=req.method, url=req.url, headers=dict(req.headers), params=dict(req.params),
            route_params=dict(req.route_params), body=req.get_body()))
    except Exception as exc:  # noqa: BLE001 (the boundary: nothing escapes as a stack trace)
        answer = error_answer(exc)
    return _http(answer)


# ----------------------------------------------------------------------------- operations
@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve("health", req)


@app.route(route="runs", methods=["GET"])
async def runs_list(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve("runs_list", req)


# ----------------------------------------------------------------------------- policy as code
@app.route(route="policy/verify", methods=["POST"])
async def policy_verify(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve("policy_verify", req)


@app.route(route="policy/plan", methods=["POST"])
async def policy_plan(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve("policy_plan", req)


@app.route(route="policy/apply", methods=["POST"])
async def policy_apply(req: func.HttpRequest) -> func.HttpResponse:
    return await _serve("policy_apply", req)


@app.timer_trigger(schedule="%POLICY_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def policy_enforcement(timer: func.TimerRequest) -> None:
    """Scheduled compliance: verify in audit mode; plan and apply when safe in enforce mode."""
    from shared.policy.service import scheduled_run
    from shared.services import get_services

    result = await scheduled_run(get_services(), past_due=timer.past_due)
    log.info("policy_enforcement finished: run %s result %s", result["runId"], result["result"])
