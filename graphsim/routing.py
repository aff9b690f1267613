"""Request and response values independent of aiohttp, and a small segment router.

Both the HTTP front door and `$batch` build a `SimRequest` and go through the same dispatcher, so a
batch item is handled exactly like a direct call. Paths are split into decoded segments; the OData key
form `users('x')` becomes `users`, `x` and a function call `delta()` becomes `delta`. Literal segments
match case-insensitively, as Graph's do.
"""
from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from graphsim.errors import GraphApiError

JSON_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
_KEY_FORM = re.compile(r"^([^()]+)\((.*)\)$", re.DOTALL)


@dataclass
class SimRequest:
    """One Graph call: method, decoded path segments, lower-cased query option names, headers, body."""

    method: str
    segments: list[str]
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    root: str
    version: str = "v1.0"
    token: str = ""
    app_id: str = ""
    in_batch: bool = False
    _json: Any = field(default=None, repr=False)

    def json(self) -> Any:
        """The body as JSON; a Graph 400 when it isn't."""
        if self._json is None:
            if not self.body.strip():
                raise GraphApiError(400, "BadRequest", "Empty Payload. JSON content expected.")
            try:
                self._json = json.loads(self.body)
            except ValueError:
                raise GraphApiError(400, "BadRequest", "Unable to read JSON request payload. Please ensure "
                                    "Content-Type header is set and payload is of valid JSON format.") from None
        return self._json

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object (400 otherwise)."""
        body = self.json()
        if not isinstance(body, dict):
            raise GraphApiError(400, "BadRequest", "The request body must be a JSON object.")
        return body

    @property
    def base(self) -> str:
        """`http://host:port/v1.0`: the prefix for links the simulator emits."""
        return f"{self.root}/{self.version}"


@dataclass
class SimResponse:
    """A handler's answer: JSON body (or None), status, extra headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def items(self) -> int:
        """Objects in a collection answer (`value`) or answers in a `$batch` (`responses`); 0 otherwise.
        What `latency_per_item_ms` multiplies."""
        if isinstance(self.body, dict):
            for key in ("value", "responses"):
                if isinstance(self.body.get(key), list):
                    return len(self.body[key])
        return 0


def split_path(raw_path: str) -> list[str]:
    """Decoded path segments with OData key and function-call forms unfolded."""
    out: list[str] = []
    for raw in raw_path.split("/"):
        if not raw:
            continue
        seg = unquote(raw)
        m = _KEY_FORM.match(seg)
        if m:
            out.append(m.group(1))
            inner = m.group(2).strip()
            if inner:
                if len(inner) >= 2 and inner[0] == inner[-1] == "'":
                    inner = inner[1:-1].replace("''", "'")
                out.append(inner)
        else:
            out.append(seg)
    return out


def parse_query(raw_query: str) -> dict[str, str]:
    """Query options with `$` names lower-cased (Graph treats them case-insensitively)."""
    out: dict[str, str] = {}
    for key, value in parse_qsl(raw_query, keep_blank_values=True):
        out[key.lower() if key.startswith("$") else key] = value
    return out


Handler = Callable[..., "SimResponse | Awaitable[SimResponse]"]


def read_cost(base: int) -> Callable[[SimRequest], int]:
    """Graph's RU rule for a GET: `base`, -1 for $select, +1 for $expand, -1 for $top < 20, never below 1."""
    def cost(req: SimRequest) -> int:
        q = req.query
        ru = base
        if "$select" in q:
            ru -= 1
        if "$expand" in q:
            ru += 1
        top = q.get("$top")
        if top is not None and top.isdigit() and int(top) < 20:
            ru -= 1
        return max(1, ru)
    return cost


@dataclass
class Route:
    """One route: method, pattern segments, handler and how it is metered."""

    method: str
    pattern: tuple[str, ...]
    handler: Handler
    name: str
    ru: int = 1                   # base RU of a GET, adjusted by its query options (see read_cost)
    write: bool = False
    ca: bool = False              # Conditional Access: 1 request/s per tenant
    envelope: bool = False        # the $batch envelope: free, never faulted
    auth_methods: bool = False    # users/{id}/authentication/*: the tenant's authentication-method limit
    cost: Callable[[SimRequest], int] | None = None   # None: writes 1 RU (+1 write), GETs read_cost(ru)
    is_async: bool = False


class Router:
    """Matches decoded segments to routes; 400 for unknown segments, 405 for a known path with another method."""

    def __init__(self) -> None:
        self._by_shape: dict[tuple[int, str], list[Route]] = {}

    def add(self, method: str, path: str, handler: Handler, **opts: Any) -> None:
        """Register `handler` for `method` on `path` (e.g. `users/{id}/authentication/fido2Methods`)."""
        import inspect
        pattern = tuple(p for p in path.split("/") if p)
        route = Route(method, pattern, handler, name=f"{method} /{path}",
                      is_async=inspect.iscoroutinefunction(handler), **opts)
        if method in ("POST", "PATCH", "PUT", "DELETE") and "write" not in opts and not route.envelope:
            route.write = True
        if method == "GET" and route.cost is None:
            route.cost = read_cost(route.ru)
        if "auth_methods" not in opts:
            route.auth_methods = len(pattern) > 2 and pattern[0] == "users" and pattern[2] == "authentication"
        first = pattern[0]
        key = (len(pattern), "*" if first.startswith("{") else first.lower())
        self._by_shape.setdefault(key, []).append(route)

    def match(self, method: str, segments: list[str]) -> tuple[Route, dict[str, str]]:
        """The route and its parameters, or a Graph error."""
        if not segments:
            raise GraphApiError(400, "BadRequest", "Invalid request: no resource segment.")
        candidates = self._by_shape.get((len(segments), segments[0].lower()), [])
        path_matched = False
        for route in candidates:
            params = _match(route.pattern, segments)
            if params is None:
                continue
            if route.method == method:
                return route, params
            path_matched = True
        if path_matched:
            raise GraphApiError(405, "Request_BadRequest",
                                f"The HTTP method '{method}' is not allowed for this resource.")
        known = {k[1] for k in self._by_shape}
        bad = segments[0] if segments[0].lower() not in known else segments[-1]
        raise GraphApiError(400, "BadRequest", f"Resource not found for the segment '{bad}'.")

    def names(self) -> list[str]:
        """Every route's name (`METHOD /pattern`), e.g. to hold a per-route table to the router."""
        return [route.name for routes in self._by_shape.values() for route in routes]


def _match(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for pat, seg in zip(pattern, segments, strict=True):
        if pat[0] == "{":
            params[pat[1:-1]] = seg
        elif pat.lower() != seg.lower():
            return None
    return params
