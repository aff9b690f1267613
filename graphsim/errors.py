"""Graph's error envelope, as the simulator answers it.

Every error the simulator returns is `{"error": {"code", "message", "innerError": {"date", "request-id",
"client-request-id"}}}`, the shape Microsoft Graph v1.0 uses, so clients exercise the same parsing
(the SDK's `ODataError`) they will meet in production. Handlers raise `GraphApiError`; the dispatcher
turns it into a response and fills in the request ids.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


class GraphApiError(Exception):
    """An error answer: HTTP status, Graph error code, message and optional extra headers."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad_request(message: str, code: str = "BadRequest") -> GraphApiError:
    """A 400 with Graph's generic `BadRequest` code unless another is given."""
    return GraphApiError(400, code, message)


def error_body(code: str, message: str, request_id: str, client_request_id: str) -> dict[str, Any]:
    """The JSON body of an error answer."""
    return {"error": {"code": code, "message": message, "innerError": {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": request_id, "client-request-id": client_request_id}}}
