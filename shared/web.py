"""Plain helpers for HTTP entry points: JSON bodies in, JSON answers out, errors as Graph-like envelopes.

Kept free of azure.functions so the use cases stay testable; `function_app.py` turns `Answer` into an
`HttpResponse`. `parse_json` is the one strict JSON reader of untrusted bytes (bodies, webhooks, the
desired-state file); `read_body` reads a request body into its pydantic model (`shared.schemas.bodies`).
Error bodies are always `{"error": {"code", "message"}}` and never carry `str()` of an
unexpected exception or a stack trace.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from shared.errors import InputError, PasskeyGuardError, PayloadTooLarge

if TYPE_CHECKING:  # pydantic is imported by the readers when they run, never with this module (cold start)
    from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)
M = TypeVar("M", bound="BaseModel")
MAX_BODY_BYTES = 1024 * 1024  # request bodies above this are refused with 413 before parsing
MAX_TICKET_BYTES = 64 * 1024  # the ticket webhook's tighter limit (a ticket event is small)


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


def refuse_declared_oversize(headers: Mapping[str, str], *, limit: int = MAX_BODY_BYTES) -> None:
    """Refuse a request from its declared `Content-Length`, before anything reads the body: over the route's
    `limit` (1 MiB unless the route says otherwise) is 413, a value that is not a whole number is 400."""
    declared = (headers.get("content-length") or "").strip()
    if not declared:
        return  # no declaration (GET, chunked): the readers check the length they get
    if not (declared.isascii() and declared.isdigit()):
        raise InputError("Content-Length header: expected a whole number of bytes")
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


def _not_json(what: str, problem: str, where: str = "") -> InputError:
    return InputError(f"{what}: {problem}", detail=[{"field": what, "problem": problem + where}])


def parse_json(raw: bytes | str, *, what: str = "body", limit: int | None = MAX_BODY_BYTES) -> Any:
    """The one strict reader of untrusted JSON: a request body, a webhook POST, a desired-state file.

    Over `limit` bytes is PayloadTooLarge; blank, not UTF-8, not JSON (NaN and Infinity are not JSON, nor are
    integers past Python's int-string limit) or nested too deeply is an InputError whose message is
    `"<what>: <problem>"` and whose detail adds where the JSON broke (`at line 1 column 19`).
    """
    if isinstance(raw, str):
        text = raw
    else:
        if limit is not None and len(raw) > limit:
            raise PayloadTooLarge(f"{what}: larger than {limit} bytes")
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise _not_json(what, "not UTF-8") from None
    if not text.strip():
        raise _not_json(what, "empty")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise _not_json(what, "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, integers past the int-string limit
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise _not_json(what, "not valid JSON", where) from None


def read_json_object(body: bytes, *, limit: int = MAX_BODY_BYTES, allow_empty: bool = True) -> dict[str, Any]:
    """Parse a request body that must be a JSON object (an empty body is `{}` when allowed)."""
    if len(body) <= limit and not body.strip() and allow_empty:
        return {}
    doc = parse_json(body, what="request body", limit=limit)
    if not isinstance(doc, dict):
        raise InputError("request body: expected a JSON object")
    return doc


def _allowed_fields(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The field names of the (nested) model at `loc`, for "unknown field ...; allowed fields: ..."."""
    import typing

    from pydantic import BaseModel

    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            break
        nested = [a for a in (field.annotation, *typing.get_args(field.annotation))
                  if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            break
        model = nested[0]
    return [f.alias or name for name, f in model.model_fields.items()]


def body_error(error: ValidationError, model: type[BaseModel]) -> InputError:
    """A 400 naming the first problem (`unknown field 'x'; allowed fields: ...`, `field 'a.b' is required`,
    `field 'planId' must be a string, got null`), every problem in the detail."""
    from shared.schemas.problems import problems_of

    items = problems_of(error)
    first, where = items[0], error.errors()[0]
    name = first["field"]
    if where["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_fields(model, tuple(where["loc"][:-1]))) or "none"
        message = f"unknown field {name!r}; allowed fields: {allowed}"
    elif where["type"] == "missing":
        message = f"field {name!r} is required"
    else:
        message = f"field {name!r} {first['problem']}"
    return InputError(message, detail=items)


def read_body(body: bytes, model: type[M], *, limit: int = MAX_BODY_BYTES) -> M:
    """Parse a request body into `model` (`shared.schemas.bodies`): an unknown field, a wrong type or a missing
    required field is a 400 naming it (nested fields as `outer.inner`). An empty body is `{}`, which is valid
    only when the model requires nothing. Use it for every body a route acts on, so a typo or a stray field
    is refused instead of silently ignored."""
    from pydantic import ValidationError

    doc = read_json_object(body, limit=limit)
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise body_error(exc, model) from None
