"""The HTTP wiring as the tests read it: what each HTTP function of function_app hands `_serve` (its use case
and the access it declares), the routes the host indexes, and the operations openapi/passkey-guard.yaml
describes. tests/functions/test_route_access.py keeps the three in step; other tests import the tables."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import azure.functions as func
import yaml

from shared.principal import Access

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "openapi" / "passkey-guard.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@dataclass(frozen=True)
class Wired:
    """What one HTTP function passes to `function_app._serve`."""

    handler: Any
    access: Access


def trigger_of(fn: Any) -> dict[str, Any]:
    """The trigger binding of an indexed function."""
    return next(b for b in fn.get_bindings_dict()["bindings"] if b["type"].endswith("Trigger"))


def http_functions(functions: dict[str, Any]) -> dict[str, Any]:
    """The indexed functions with an HTTP trigger, by name."""
    return {name: fn for name, fn in functions.items() if trigger_of(fn)["type"] == "httpTrigger"}


def _finish(name: str, coro: Any) -> Any:
    """Run a coroutine that must not suspend (an HTTP function whose `_serve` answers at once), without an
    event loop, so the tables below can be read at import, inside or outside a running loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError(f"{name} awaits something besides _serve: function_app.py only wires")


def wiring(functions: dict[str, Any]) -> dict[str, list[Wired]]:
    """Function name -> every (use case, access) it handed `_serve` when called once, read by calling each
    HTTP function with `_serve` replaced by a recorder: the function body is the wiring, so this reads it."""
    import function_app

    calls: list[Wired] = []

    async def record(handler: Any, req: func.HttpRequest, *, access: Access, **limits: int) -> func.HttpResponse:
        calls.append(Wired(handler, access))
        return func.HttpResponse(status_code=204)

    seen: dict[str, list[Wired]] = {}
    with mock.patch.object(function_app, "_serve", record):
        for name, fn in http_functions(functions).items():
            calls.clear()
            req = func.HttpRequest(method="GET", url="https://func.example/api/", headers={}, params={},
                                   route_params={}, body=b"")
            _finish(name, fn.get_user_function()(req))
            seen[name] = list(calls)
    return seen


def _declared_access() -> dict[str, str]:
    from devhost.host import index_functions

    return {name: wired[0].access.value for name, wired in wiring(index_functions()).items() if len(wired) == 1}


#: Function name -> the access its route declares in function_app.py ("public" or the app role it needs),
#: read from the wiring itself; test_route_access.py checks it against the OpenAPI description.
ROUTE_ACCESS: dict[str, str] = _declared_access()


def http_routes(functions: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str]]:
    """(route, METHOD) -> (function name, auth level) for every HTTP trigger of function_app."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for name, fn in http_functions(functions).items():
        trigger = trigger_of(fn)
        level = str(getattr(trigger["authLevel"], "value", trigger["authLevel"])).lower()
        for method in trigger.get("methods") or ["GET", "POST"]:
            out[(trigger["route"].strip("/"), str(getattr(method, "value", method)).upper())] = (name, level)
    return out


def load_spec() -> dict[str, Any]:
    """The OpenAPI description as a dict."""
    return yaml.safe_load(SPEC.read_text(encoding="utf-8"))


def spec_operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(path without the leading /, METHOD) -> operation object."""
    return {(path.strip("/"), method.upper()): op for path, item in spec["paths"].items()
            for method, op in item.items() if method in METHODS}
