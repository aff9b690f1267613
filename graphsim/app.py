"""The simulator's server: route table, the per-request pipeline, and the aiohttp front door.

Pipeline for every Graph call (direct or inside `$batch`): bearer token (401) → route match (400 unknown
segment, 405 wrong method) → the token's permissions for the route (403, graphsim/permissions.py) → injected
status fault → Conditional Access limit (429, no Retry-After)
→ resource-unit and write buckets (429 with Retry-After and x-ms-throttle-* headers) → handler.
Every answer carries `request-id`, `client-request-id` and `x-ms-resource-unit`. Transport faults
(latency, dropped connections) happen at the front door. `/_sim/*` goes to the control router.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from graphsim import api_batch, api_control, api_policies, api_reports, api_subscriptions, api_users, permissions
from graphsim.clock import SimClock
from graphsim.config import SimConfig
from graphsim.delta import DeltaEngine
from graphsim.errors import GraphApiError, error_body
from graphsim.faults import Faults
from graphsim.notify import Notifier
from graphsim.routing import JSON_TYPE, Router, SimRequest, SimResponse, parse_query, split_path
from graphsim.stats import Stats
from graphsim.store import TenantStore
from graphsim.throttle import Throttle

log = logging.getLogger(__name__)
VERSIONS = ("v1.0", "beta")
TICK_S = 0.1  # how often the server looks for timers that fell due on its clock


def build_graph_router(delta: DeltaEngine) -> Router:
    """Every Graph route the simulator answers."""
    r = Router()
    u, p, s = api_users, api_policies, api_subscriptions
    r.add("POST", "$batch", api_batch.batch, envelope=True)
    # users (literal segments before {id})
    r.add("GET", "users/delta", lambda sim, req, params: delta.handle(req), cost=DeltaEngine.cost)
    r.add("GET", "users", u.list_users, ru=2)
    r.add("POST", "users", u.create_user)
    r.add("GET", "users/{id}", u.get_user)
    r.add("PATCH", "users/{id}", u.patch_user)
    r.add("DELETE", "users/{id}", u.delete_user)
    r.add("GET", "users/{id}/authentication/fido2Methods", u.list_fido2, cost=lambda req: 1)
    r.add("GET", "users/{id}/authentication/fido2Methods/{mid}", u.get_fido2, cost=lambda req: 1)
    r.add("DELETE", "users/{id}/authentication/fido2Methods/{mid}", u.delete_fido2)
    r.add("GET", "directory/deletedItems/{id}", u.get_deleted_item)
    r.add("POST", "directory/deletedItems/{id}/restore", u.restore_deleted_item)
    r.add("DELETE", "directory/deletedItems/{id}", u.purge_deleted_item)
    r.add("GET", "groups", u.list_groups)
    r.add("GET", "groups/{id}", u.get_group)
    r.add("GET", "servicePrincipals/{id}", u.get_service_principal)
    r.add("GET", "organization", u.list_organization)
    # authentication methods policy
    r.add("GET", "policies/authenticationMethodsPolicy", p.get_methods_policy)
    r.add("GET", "policies/authenticationMethodsPolicy/authenticationMethodConfigurations", p.list_method_configs)
    r.add("GET", "policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{cfg}", p.get_fido2_config)
    r.add("PATCH", "policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{cfg}",
          p.patch_fido2_config)
    # authentication strengths, under both paths
    for base in ("policies/authenticationStrengthPolicies",
                 "identity/conditionalAccess/authenticationStrength/policies"):
        r.add("GET", base, p.list_strengths)
        r.add("POST", base, p.create_strength)
        r.add("GET", f"{base}/{{id}}", p.get_strength)
        r.add("PATCH", f"{base}/{{id}}", p.patch_strength)
        r.add("DELETE", f"{base}/{{id}}", p.delete_strength)
        r.add("POST", f"{base}/{{id}}/updateAllowedCombinations", p.update_allowed_combinations)
        r.add("GET", f"{base}/{{id}}/usage", p.strength_usage)
        r.add("GET", f"{base}/{{id}}/combinationConfigurations", p.list_combo_configs)
        r.add("POST", f"{base}/{{id}}/combinationConfigurations", p.create_combo_config)
        r.add("GET", f"{base}/{{id}}/combinationConfigurations/{{cid}}", p.get_combo_config)
        r.add("PATCH", f"{base}/{{id}}/combinationConfigurations/{{cid}}", p.patch_combo_config)
        r.add("DELETE", f"{base}/{{id}}/combinationConfigurations/{{cid}}", p.delete_combo_config)
    # Conditional Access
    r.add("GET", "identity/conditionalAccess/policies", p.list_ca, ca=True)
    r.add("POST", "identity/conditionalAccess/policies", p.create_ca, ca=True)
    r.add("GET", "identity/conditionalAccess/policies/{id}", p.get_ca, ca=True)
    r.add("PATCH", "identity/conditionalAccess/policies/{id}", p.patch_ca, ca=True)
    r.add("DELETE", "identity/conditionalAccess/policies/{id}", p.delete_ca, ca=True)
    # reports (AuditLog.Read.All)
    r.add("GET", "reports/authenticationMethods/userRegistrationDetails", api_reports.list_registration_details)
    r.add("GET", "reports/authenticationMethods/userRegistrationDetails/{id}", api_reports.get_registration_details)
    # subscriptions
    r.add("GET", "subscriptions", s.list_subscriptions)
    r.add("POST", "subscriptions", s.create_subscription)
    r.add("GET", "subscriptions/{id}", s.get_subscription)
    r.add("PATCH", "subscriptions/{id}", s.patch_subscription)
    r.add("DELETE", "subscriptions/{id}", s.delete_subscription)
    r.add("POST", "subscriptions/{id}/reauthorize", s.reauthorize_subscription)
    return r


def build_control_router() -> Router:
    """The `/_sim/*` routes (paths relative to `/_sim`)."""
    r = Router()
    c = api_control
    r.add("GET", "health", c.health)
    r.add("GET", "config", c.get_config)
    r.add("PATCH", "config", c.patch_config)
    r.add("GET", "stats", c.get_stats)
    r.add("POST", "stats/reset", c.reset_stats)
    r.add("GET", "state", c.get_state)
    r.add("POST", "delta/invalidate", c.invalidate_delta)
    r.add("POST", "throttle/reset", c.reset_throttle)
    r.add("POST", "throttle/clock", c.throttle_clock)
    r.add("GET", "clock", c.get_clock)
    r.add("POST", "clock", c.throttle_clock)
    r.add("POST", "notifications/flush", c.flush_notifications)
    r.add("POST", "users/bulk_rename", c.bulk_rename)
    r.add("POST", "users/{id}/fido2Methods", c.register_passkey)
    r.add("POST", "subscriptions/{id}/lifecycle", c.lifecycle)
    return r


def app_id_for(token: str) -> str:
    """The calling app's id: the `appid`/`azp` claim of a JWT (unverified), else a stable id per token."""
    parts = token.split(".")
    if len(parts) == 3:
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            app = claims.get("appid") or claims.get("azp")
            if isinstance(app, str) and app:
                return app
        except ValueError:
            pass
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "graphsim-app:" + token))


class SimServer:
    """One simulated tenant with its meters, notifier and routes."""

    def __init__(self, store: TenantStore, config: SimConfig) -> None:
        self.store = store
        self.config = config
        self.stats = Stats()
        self.clock = SimClock()              # the one clock: the throttle, delta, subscriptions, reports
        self.throttle = Throttle(config)
        self.throttle.clock = self.clock
        store.clock = self.clock.now
        self.faults = Faults(config)
        self.notifier = Notifier(store, config, self.stats, self.clock)
        self.delta = DeltaEngine(store, config, self.clock)
        self.reports = api_reports.RegistrationReport()
        self.router = build_graph_router(self.delta)
        self.control = build_control_router()
        self.batch_rng = random.Random()
        self._apps: dict[str, str] = {}
        self._grants: dict[str, frozenset[str] | None] = {}  # token -> its JWT roles/scp; None when opaque
        self.held = 0  # Graph requests waiting for `graph_paused` to clear
        self._resumed = asyncio.Event()
        self.pause_changed()

    def pause_changed(self) -> None:
        """Follow the `graph_paused` knob: clearing it lets every held request on."""
        if self.config.graph_paused:
            self._resumed.clear()
        else:
            self._resumed.set()

    async def hold(self) -> None:
        """Keep a Graph request waiting while `graph_paused` is on (counted in `/_sim/stats` as `graph_held`)."""
        self.held += 1
        try:
            await self._resumed.wait()
        finally:
            self.held -= 1

    async def dispatch(self, req: SimRequest) -> SimResponse:
        """Run one Graph call through the pipeline; always returns a response (errors included)."""
        request_id = str(uuid.uuid4())
        client_request_id = req.headers.get("client-request-id") or request_id
        route_name = "unmatched"
        ru = 0
        try:
            scheme, _, token = req.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise GraphApiError(401, "InvalidAuthenticationToken", "Access token is empty.")
            req.token = token.strip()
            req.app_id = self._apps.get(req.token) or self._apps.setdefault(req.token, app_id_for(req.token))
            route, params = self.router.match(req.method, req.segments)
            route_name = route.name
            self._check_permissions(route.name, req)
            if not route.envelope:
                fault = self.faults.status()
                if fault is not None:
                    self.stats.faults[str(fault)] += 1
                    raise _fault_error(fault, self.config.fault_429_retry_after_s)
                if route.ca and not self.throttle.ca_allowed():
                    self.stats.throttled["ca"] += 1
                    raise GraphApiError(429, "TooManyRequests", "Too many requests to Conditional Access; "
                                        "the limit is one request per second per tenant.")
                ru = route.cost(req) if route.cost else 1
                verdict = self.throttle.charge(req.app_id, ru, route.write)
                if verdict.allowed or self.config.throttle_charge_rejected:
                    self.stats.resource_units += ru
                if not verdict.allowed:
                    self.stats.throttled["ru" if verdict.information.startswith("Resource") else "write"] += 1
                    headers = {"Retry-After": str(verdict.retry_after),
                               "x-ms-throttle-scope": f"Tenant_Application/ReadWrite/{req.app_id}/"
                                                      f"{self.store.tenant_id}",
                               "x-ms-throttle-information": verdict.information,
                               "x-ms-throttle-limit-percentage": str(verdict.limit_percentage)}
                    raise GraphApiError(429, "TooManyRequests", "Too many requests. Retry after the time given "
                                        "in the Retry-After header.", headers=headers)
                if route.write:
                    self.stats.writes += 1
                pct = verdict.limit_percentage
            else:
                pct = None
            result: Any = route.handler(self, req, params)
            resp: SimResponse = await result if route.is_async else result
            if pct is not None:
                resp.headers["x-ms-throttle-limit-percentage"] = str(pct)
        except GraphApiError as exc:
            resp = SimResponse(exc.status, error_body(exc.code, exc.message, request_id, client_request_id),
                               dict(exc.headers))
        except Exception:
            log.exception("handler failed for %s %s", req.method, route_name)
            resp = SimResponse(500, error_body("generalException", "An internal simulator error occurred.",
                                               request_id, client_request_id))
        resp.headers["request-id"] = request_id
        resp.headers["client-request-id"] = client_request_id
        resp.headers["x-ms-resource-unit"] = str(ru)
        self.stats.call(route_name, resp.status)
        if route_name == "GET /users/delta" and resp.status == 200:
            self.stats.delta_pages += 1
        return resp

    def _check_permissions(self, route_name: str, req: SimRequest) -> None:
        """Graph's 403 unless the bearer token carries the route's permissions (graphsim/permissions.py)."""
        if req.token not in self._grants:
            self._grants[req.token] = permissions.token_grants(req.token)

        def body() -> Any:
            try:
                return req.json()
            except GraphApiError:  # the handler answers a bad body with its own 400
                return None
        permissions.check(route_name, self._grants[req.token], body, opaque_roles=self.config.opaque_token_roles,
                          application_read=self.config.application_read_granted)

    def tick(self) -> None:
        """Run what fell due on the simulator's clock (called every TICK_S and after each clock move)."""
        self.notifier.tick()

    def control_dispatch(self, req: SimRequest) -> SimResponse:
        """Run one `/_sim` call (no token, no meters)."""
        try:
            route, params = self.control.match(req.method, req.segments)
            return route.handler(self, req, params)  # type: ignore[return-value]
        except GraphApiError as exc:
            return SimResponse(exc.status, error_body(exc.code, exc.message, "", ""), dict(exc.headers))


def _fault_error(status: int, retry_after: int) -> GraphApiError:
    if status == 429:
        return GraphApiError(429, "TooManyRequests", "Too many requests (injected).",
                             headers={"Retry-After": str(max(0, retry_after))})
    if status == 503:
        return GraphApiError(503, "serviceNotAvailable", "Service unavailable (injected).")
    return GraphApiError(504, "UnknownError", "Gateway timeout (injected).")


def _to_web(resp: SimResponse) -> web.Response:
    headers = dict(resp.headers)
    if resp.body is None:
        return web.Response(status=resp.status, headers=headers)
    headers["Content-Type"] = JSON_TYPE
    headers.setdefault("OData-Version", "4.0")
    return web.Response(status=resp.status, body=json.dumps(resp.body).encode(), headers=headers)


def make_app(sim: SimServer) -> web.Application:
    """The aiohttp application serving `sim` under /v1.0, /beta and /_sim."""
    async def handle(request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        first, _, rest = raw_path.lstrip("/").partition("/")
        body = await request.read()
        root = f"http://{request.host}"
        headers = {k.lower(): v for k, v in request.headers.items()}
        if first == "_sim":
            req = SimRequest(request.method, split_path(rest), parse_query(request.rel_url.raw_query_string),
                             headers, body, root)
            return _to_web(sim.control_dispatch(req))
        sim.stats.http_requests += 1
        delay = sim.faults.latency_s()
        if delay > 0:
            sim.stats.delayed(delay)
            await asyncio.sleep(delay)
        if sim.config.graph_paused:
            await sim.hold()
        if sim.faults.drop():
            sim.stats.faults["drop"] += 1
            if request.transport is not None:
                request.transport.abort()
            raise web.HTTPException()  # never sent: the connection is gone
        if first not in VERSIONS:
            return _to_web(SimResponse(400, error_body("BadRequest", f"Invalid version: '{first}'.",
                                                       str(uuid.uuid4()), headers.get("client-request-id", ""))))
        req = SimRequest(request.method, split_path(rest), parse_query(request.rel_url.raw_query_string),
                         headers, body, root, version=first)
        return _to_web(await sim.dispatch(req))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)

    async def ticker(_app: web.Application) -> AsyncIterator[None]:
        async def run() -> None:
            while True:  # timers on the simulator's clock: nothing to wait on but the clock itself
                sim.tick()
                await asyncio.sleep(TICK_S)
        task = asyncio.get_running_loop().create_task(run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    app.cleanup_ctx.append(ticker)

    async def on_shutdown(_app: web.Application) -> None:
        await sim.notifier.close()
    app.on_shutdown.append(on_shutdown)
    return app
