"""A thin loopback stand-in for `func start` (not deployed; Core Tools cannot be installed here).

It indexes `function_app.app` once, serves every HTTP function at its route under /api with real
`azure.functions.HttpRequest` objects, drains the `upn-changes` queue into the queue function with real
`QueueMessage` objects (base64, poison queue after `maxDequeueCount`, like the host), and runs any
non-HTTP function on `POST /admin/functions/{name}` as the real host's admin API does. Used by
`make demo` and the end-to-end tests, so Graph's simulator can deliver notifications to a live URL.

There is no App Service Authentication in front: request headers reach the functions as sent, so a test
plays Easy Auth by sending the `X-MS-CLIENT-PRINCIPAL` header it would write
(`shared.principal.encode_principal`) and by building the Settings with `WEBSITE_AUTH_ENABLED=True`
(`tests/e2e/stack.py` does both; without that setting the admin routes answer 503 `authUnavailable`).
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import azure.functions as func
from aiohttp import web
from azure.core.exceptions import ResourceNotFoundError
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

log = logging.getLogger(__name__)
MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount


def index_functions() -> dict[str, Any]:
    """Function name -> indexed function of `function_app.app` (get_functions() works once per app)."""
    import function_app

    cache = getattr(function_app, "_devhost_index", None)
    if cache is None:
        cache = {f.get_function_name(): f for f in function_app.app.get_functions()}
        function_app._devhost_index = cache  # type: ignore[attr-defined]
    return cache


def _trigger(fn: Any) -> dict[str, Any]:
    return next(b for b in fn.get_bindings_dict()["bindings"] if b.get("type", "").endswith("Trigger"))


def _route_regex(route: str) -> re.Pattern[str]:
    pattern = re.sub(r"\{(\w+)(?::[^}]*)?\}", r"(?P<\1>[^/]+)", route.strip("/"))
    return re.compile(f"^{pattern}$")


class DevHost:
    """Serves the function app on 127.0.0.1; `await start()`, then `.url`; `await stop()`."""

    def __init__(self, *, queue_client_factory: Callable[[str], Any] | None = None, poll_seconds: float = 0.2
                 ) -> None:
        self.functions = index_functions()
        self._routes: list[tuple[re.Pattern[str], set[str], Any]] = []
        for fn in self.functions.values():
            trig = _trigger(fn)
            if trig["type"] == "httpTrigger":
                methods = {str(getattr(m, "value", m)).upper() for m in (trig.get("methods") or ["GET", "POST"])}
                self._routes.append((_route_regex(trig["route"]), methods, fn))
        self._queue_client_factory = queue_client_factory
        self._queues: dict[str, Any] = {}
        self._poll = poll_seconds
        self._runner: web.AppRunner | None = None
        self._drainer: asyncio.Task[None] | None = None
        self.url = ""
        self.invocations: dict[str, int] = {}

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["tail"]
        if path.startswith("admin/functions/") and request.method == "POST":
            return await self._admin(path.rsplit("/", 1)[-1], await request.read())
        for regex, methods, fn in self._routes:
            match = regex.match(path)
            if match and request.method in methods:
                body = await request.read()
                req = func.HttpRequest(method=request.method, url=str(request.url), headers=dict(request.headers),
                                       params=dict(request.query), route_params=match.groupdict(), body=body)
                resp = await self._invoke(fn, req)
                headers = {k: v for k, v in resp.headers.items() if k.lower() not in ("content-length", "content-type")}
                headers["Content-Type"] = resp.headers.get("Content-Type") or resp.mimetype or "text/plain"
                return web.Response(status=resp.status_code, body=resp.get_body(), headers=headers)
        return web.json_response({"error": {"code": "notFound", "message": f"no function at /api/{path}"}},
                                 status=404)

    async def _outside_api(self, request: web.Request) -> web.Response:
        """A path that normalises outside /api (say a route parameter of `..`): no function, JSON like the rest."""
        return web.json_response({"error": {"code": "notFound", "message": "no function at this path"}}, status=404)

    async def _invoke(self, fn: Any, *args: Any) -> Any:
        name = fn.get_function_name()
        self.invocations[name] = self.invocations.get(name, 0) + 1
        result = fn.get_user_function()(*args)
        return await result if asyncio.iscoroutine(result) else result

    async def _admin(self, name: str, body: bytes) -> web.Response:
        """Run a non-HTTP function now, like the host's admin API (`{"input": ...}` for event triggers)."""
        fn = self.functions.get(name)
        if fn is None:
            return web.json_response({"error": {"code": "notFound", "message": f"no function {name}"}}, status=404)
        trig = _trigger(fn)
        payload = json.loads(body or b"{}")
        if trig["type"] == "timerTrigger":
            await self._invoke(fn, TimerRequest(past_due=False))
        elif trig["type"] == "eventGridTrigger":
            event = payload.get("input") or payload  # decoded as the host does: a CloudEvent stays one
            await self._invoke(fn, EventGridEventInConverter.decode(Datum(json.dumps(event), "json"),
                                                                    trigger_metadata=None))
        else:
            return web.json_response({"error": {"code": "badRequest", "message": "not invocable here"}}, status=400)
        return web.Response(status=202)

    # ------------------------------------------------------------------ queue
    async def drain_once(self) -> int:
        """Deliver every visible queue message once to its queue function; returns how many ran."""
        ran = 0
        for fn in self.functions.values():
            trig = _trigger(fn)
            if trig["type"] != "queueTrigger" or self._queue_client_factory is None:
                continue
            queue = self._queue(trig["queueName"])
            async for msg in queue.receive_messages(messages_per_page=16, visibility_timeout=30):
                body = base64.b64decode(msg.content)
                qmsg = QueueMessage(id=msg.id, body=body, dequeue_count=msg.dequeue_count,
                                    pop_receipt=msg.pop_receipt)
                try:
                    await self._invoke(fn, qmsg)
                except Exception:
                    log.exception("queue function %s failed (attempt %s)", fn.get_function_name(), msg.dequeue_count)
                    if msg.dequeue_count >= MAX_DEQUEUE_COUNT:
                        poison = self._queue(trig["queueName"] + "-poison")
                        with contextlib.suppress(Exception):
                            await poison.create_queue()
                        await poison.send_message(msg.content)
                        await queue.delete_message(msg)
                    else:
                        await queue.update_message(msg, visibility_timeout=0)
                    continue
                await queue.delete_message(msg)
                ran += 1
        return ran

    def _queue(self, name: str) -> Any:
        """One queue client per queue for the host's lifetime (closed by stop())."""
        if name not in self._queues:
            assert self._queue_client_factory is not None
            self._queues[name] = self._queue_client_factory(name)
        return self._queues[name]

    async def _drain_forever(self) -> None:
        while True:
            try:
                if not await self.drain_once():
                    await asyncio.sleep(self._poll)
            except asyncio.CancelledError:
                raise
            except ResourceNotFoundError:
                await asyncio.sleep(self._poll)  # the queue is created by the first producer
            except Exception:
                log.exception("queue drain failed; retrying")
                await asyncio.sleep(self._poll)

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, port: int = 0, drain: bool = True) -> str:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        # [\s\S]: a route parameter may hold a newline (%0A), which `.` would not match
        app.router.add_route("*", r"/api/{tail:[\s\S]*}", self._handle)
        app.router.add_route("POST", "/{tail:admin/functions/.*}", self._handle)
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._outside_api)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        sockets = site._server.sockets  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        if drain and self._queue_client_factory is not None:
            self._drainer = asyncio.create_task(self._drain_forever())
        return self.url

    async def stop(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
        if self._runner is not None:
            await self._runner.cleanup()
        for client in self._queues.values():
            await client.close()
        self._queues.clear()
