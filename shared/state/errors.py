"""Azure SDK exceptions -> the Passkey Guard error tree. The only place in the app that catches them.

Messages are ours (operation, HTTP status, storage error code); SDK messages and request bodies are
never copied, so a StateError can be logged or returned to a caller as it is.
"""
from __future__ import annotations

import asyncio
import http.client
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import RequestTooLargeError

from shared.errors import ConcurrencyError, NotFound, PasskeyGuardError, PayloadTooLarge, StateError


class StateAuthError(StateError):
    """Storage refused our identity: wrong token audience, missing role assignment, or a bad key."""

    code = "stateAuthError"


class StateUnavailable(StateError):
    """Storage did not answer (connection refused or reset, timeout): worth retrying later."""

    code = "stateUnavailable"


_MISSING_CONTAINER = {"TableNotFound", "QueueNotFound"}
_CONFLICT_CODES = {"EntityAlreadyExists", "UpdateConditionNotSatisfied", "ConditionNotMet"}


def error_code(exc: BaseException) -> str | None:
    """The storage error code of an SDK exception as a plain string (Azurite sometimes omits it)."""
    code = getattr(exc, "error_code", None)
    if code is None:
        return None
    return str(getattr(code, "value", code))


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an SDK exception, if it has one."""
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def container_missing(exc: BaseException) -> bool:
    """True when the table or queue itself is missing (e.g. an in-memory Azurite was restarted)."""
    return isinstance(exc, ResourceNotFoundError) and error_code(exc) in _MISSING_CONTAINER


def is_conflict(exc: BaseException) -> bool:
    """True for "somebody wrote first": 409 exists, 412 ETag mismatch (also inside a transaction)."""
    if isinstance(exc, (ResourceExistsError, ResourceModifiedError)):
        return True
    if error_code(exc) in _CONFLICT_CODES:
        return True
    return isinstance(exc, HttpResponseError) and status_of(exc) in (409, 412)


def translate(exc: BaseException, action: str) -> PasskeyGuardError:
    """Our error for an SDK (or network) exception raised while doing `action` (e.g. "reading a flag")."""
    if isinstance(exc, PasskeyGuardError):
        return exc
    status, code = status_of(exc), error_code(exc)
    detail = {"status": status, "storageCode": code} if status or code else None
    if isinstance(exc, ClientAuthenticationError):
        return StateAuthError(f"storage refused our credentials while {action} (HTTP {status}, {code}): check "
                              "the identity's role assignment and the token audience", detail=detail)
    if isinstance(exc, RequestTooLargeError) or status == 413:
        return PayloadTooLarge(f"storage request too large while {action}", detail=detail)
    if is_conflict(exc):
        return ConcurrencyError(f"somebody else wrote first while {action} (HTTP {status})", detail=detail)
    if isinstance(exc, ResourceNotFoundError):
        if container_missing(exc):
            return StateError(f"storage table or queue missing while {action}", detail=detail)
        return NotFound(f"not found while {action}", detail=detail)
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return StateUnavailable(f"storage unreachable while {action} ({type(exc).__name__})")
    if isinstance(exc, HttpResponseError):
        return StateError(f"storage failed while {action} (HTTP {status}, {code})", detail=detail)
    if isinstance(exc, AzureError):
        return StateError(f"storage failed while {action} ({type(exc).__name__})")
    if isinstance(exc, (OSError, asyncio.TimeoutError, http.client.HTTPException, aiohttp.ClientError)):
        return StateUnavailable(f"storage unreachable while {action} ({type(exc).__name__})")
    return StateError(f"storage failed while {action} ({type(exc).__name__})")


_TRANSLATED = (AzureError, OSError, asyncio.TimeoutError, http.client.HTTPException, aiohttp.ClientError)


@contextmanager
def storage_errors(action: str) -> Iterator[None]:
    """Translate SDK and network exceptions raised inside the block (works around `await` too)."""
    try:
        yield
    except _TRANSLATED as exc:
        raise translate(exc, action) from exc
