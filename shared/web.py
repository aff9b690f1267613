"""Plain helpers for HTTP entry points: JSON bodies in, JSON answers out, errors as Graph-like envelopes.

Kept free of azure.functions so the use cases stay testable; `function_app.py` turns `Answer` into an
`HttpResponse`. Error bodies are always `{"error": {"code", "message"}}` and never carry `str()` of an
unexpected exception or a stack trace.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.errors import InputError, PasskeyGuardError, PayloadTooLarge

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024  # request bodies above this are refused with 413 before parsing


@dataclass
class Answer:
    """What an HTTP function returns: status, a JSON (or text) body and headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None
    mimetype: str = "application/json"

    def encoded(self) -> bytes:
        if self.text is not None:
            return self.text.encode()
        return b"" if self.body is None else json.dumps(self.body, default=str).encode()


def ok(body: Any, status: int = 200) -> Answer:
    return Answer(status=status, body=body)


def error_answer(exc: BaseException, *, public: bool = False) -> Answer:
    """Map any exception to an Answer; our own errors keep their message, others become a bare 500.

    On a `public` route (reachable without signing in) the body carries the code only: the message and
    detail can name settings, fields or state an anonymous caller has no business learning."""
    if isinstance(exc, PasskeyGuardError):
        if exc.status >= 500:
            log.error("request failed: %s (%s)", exc.code, exc.message)
        elif public:
            log.info("public request refused: %s (%s)", exc.code, exc.message)
        body = {"error": {"code": exc.code}} if public else exc.to_body()
        return Answer(status=exc.status, body=body)
    log.exception("unexpected error while handling a request")
    if public:
        return Answer(status=500, body={"error": {"code": "internalError"}})
    return Answer(status=500, body={"error": {"code": "internalError",
                                              "message": "an unexpected error occurred; see the logs"}})


def refuse_declared_oversize(handler_name: str, headers: Mapping[str, str]) -> None:
    """Refuse a request from its declared `Content-Length`, before anything reads the body: over the route's
    limit (1 MiB; 64 KiB for the ticket webhook) is 413, a value that is not a whole number is 400."""
    declared = (headers.get("content-length") or "").strip()
    if not declared:
        return  # no declaration (GET, chunked): the readers check the length they get
    if not (declared.isascii() and declared.isdigit()):
        raise InputError("Content-Length header: expected a whole number of bytes")
    limit = MAX_BODY_BYTES
    if handler_name == "tickets":
        from shared.upn.intake import MAX_TICKET_BYTES

        limit = MAX_TICKET_BYTES
    if len(declared.lstrip("0")) > 15 or int(declared) > limit:
        raise PayloadTooLarge(f"Content-Length header: {declared[:20]} bytes declared; the limit is {limit}")


def refuse_unknown_params(params: Mapping[str, str], *allowed: str) -> None:
    """A GET route's query string may hold only its own parameters (and the host's function-key `code`);
    anything else is a 400 naming it, so a misspelt filter is not silently ignored."""
    unknown = sorted(name for name in params if name not in allowed and name != "code")
    if unknown:
        shown = ", ".join(repr(name[:64]) for name in unknown[:5])
        raise InputError(f"query parameter {shown}: unknown; this route takes only {', '.join(allowed)}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_json_object(body: bytes, *, limit: int = MAX_BODY_BYTES, allow_empty: bool = True) -> dict[str, Any]:
    """Parse a request body that must be a JSON object (an empty body is `{}` when allowed)."""
    if len(body) > limit:
        raise PayloadTooLarge(f"request body is {len(body)} bytes; the limit is {limit}")
    if not body.strip():
        if allow_empty:
            return {}
        raise InputError("request body is empty; a JSON object is required")
    try:
        doc = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"request body is not valid JSON: {type(exc).__name__}") from None
    except RecursionError:
        raise InputError("request body is not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise InputError("request body must be a JSON object")
    return doc


_TYPE_NAMES: dict[type, str] = {str: "a string", bool: "true or false", int: "a whole number",
                                dict: "a JSON object", list: "a JSON array"}


@dataclass(frozen=True)
class Shape:
    """The fields a JSON object may have: name -> type (str, bool, int, dict, list) or a nested Shape."""

    fields: Mapping[str, type | Shape]
    required: frozenset[str] | set[str] = frozenset()


def _type_ok(value: Any, want: type) -> bool:
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)  # true is not a number
    return isinstance(value, want)


def check_shape(doc: Mapping[str, Any], shape: Shape, path: str = "") -> dict[str, Any]:
    """Check a parsed object against `shape`: an unknown field, a wrong type or a missing required
    field is an InputError that names it (nested fields as `outer.inner`)."""
    for name in doc:
        if name not in shape.fields:
            allowed = ", ".join(shape.fields) or "none"
            raise InputError(f"unknown field {path + name!r}; allowed fields: {allowed}")
    for name in sorted(shape.required):
        if name not in doc:
            raise InputError(f"field {path + name!r} is required")
    out: dict[str, Any] = {}
    for name, value in doc.items():
        want = shape.fields[name]
        if isinstance(want, Shape):
            if not isinstance(value, dict):
                raise InputError(f"field {path + name!r} must be a JSON object")
            out[name] = check_shape(value, want, f"{path}{name}.")
        elif not _type_ok(value, want):
            raise InputError(f"field {path + name!r} must be {_TYPE_NAMES.get(want, want.__name__)}")
        else:
            out[name] = value
    return out


def read_strict_object(body: bytes, shape: Shape, *, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """Parse a request body that must be a JSON object of exactly `shape`'s fields (see check_shape).

    An empty body is `{}` when `shape` requires nothing. Use it for every body a route acts on, so a
    typo or a stray field is refused instead of silently ignored.
    """
    doc = read_json_object(body, limit=limit, allow_empty=not shape.required)
    return check_shape(doc, shape)
