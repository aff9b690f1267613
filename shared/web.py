"""Plain helpers for HTTP entry points: JSON bodies in, JSON answers out, errors as Graph-like envelopes.

Kept free of azure.functions so the use cases stay testable; `function_app.py` turns `Answer` into an
`HttpResponse`. Error bodies are always `{"error": {"code", "message"}}` and never carry `str()` of an
unexpected exception or a stack trace.
"""
from __future__ import annotations

import json
import logging
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
