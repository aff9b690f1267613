"""Azure SDK and network exceptions become the Passkey Guard error tree in one place: each kind of failure gets
its class and code, the messages are ours (never the SDK's text), and `storage_errors` translates only what the
SDK or the network raise."""
from __future__ import annotations

import asyncio
import http.client
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
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
from azure.data.tables import RequestTooLargeError, TableErrorCode
from azure.data.tables.aio import TableClient

from devhost.azurite import Azurite
from shared.errors import ConcurrencyError, InputError, NotFound, PasskeyGuardError, PayloadTooLarge, StateError
from shared.state.errors import (
    StateAuthError,
    StateUnavailable,
    container_missing,
    error_code,
    is_conflict,
    status_of,
    storage_errors,
    translate,
)

#: What an SDK message may carry and ours must never repeat (a SAS token in a URL, a request body).
LEAK = "sig=SECRET-SAS-SIGNATURE body={\"upn\": \"someone@example.com\"}"


def sdk(kind: type[Exception], status: int | None = None, code: str | None = None) -> Exception:
    """An SDK exception as azure-core raises it: its message, and the status and storage code it carries."""
    exc = kind(message=f"Operation failed: {LEAK}")
    if status is not None:
        exc.status_code = status  # type: ignore[attr-defined]
    if code is not None:
        known = {member.value for member in TableErrorCode}
        exc.error_code = TableErrorCode(code) if code in known else code  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(("raised", "ours", "code"), [
    (sdk(ClientAuthenticationError, 403, "AuthorizationPermissionMismatch"), StateAuthError, "stateAuthError"),
    (sdk(RequestTooLargeError, 413, "RequestBodyTooLarge"), PayloadTooLarge, "payloadTooLarge"),
    (sdk(HttpResponseError, 413), PayloadTooLarge, "payloadTooLarge"),
    (sdk(ResourceExistsError, 409, "EntityAlreadyExists"), ConcurrencyError, "concurrency"),
    (sdk(ResourceModifiedError, 412, "UpdateConditionNotSatisfied"), ConcurrencyError, "concurrency"),
    (sdk(HttpResponseError, 400, "EntityAlreadyExists"), ConcurrencyError, "concurrency"),  # inside a transaction
    (sdk(HttpResponseError, 412), ConcurrencyError, "concurrency"),
    (sdk(ResourceNotFoundError, 404, "ResourceNotFound"), NotFound, "notFound"),
    (sdk(ResourceNotFoundError, 404, "TableNotFound"), StateError, "stateError"),
    (sdk(ResourceNotFoundError, 404, "QueueNotFound"), StateError, "stateError"),
    (sdk(ServiceRequestError), StateUnavailable, "stateUnavailable"),
    (sdk(ServiceResponseError), StateUnavailable, "stateUnavailable"),
    (sdk(HttpResponseError, 500, "InternalError"), StateError, "stateError"),
    (sdk(AzureError), StateError, "stateError"),
    (ConnectionRefusedError(111, LEAK), StateUnavailable, "stateUnavailable"),
    (TimeoutError(LEAK), StateUnavailable, "stateUnavailable"),
    (http.client.RemoteDisconnected(LEAK), StateUnavailable, "stateUnavailable"),
    (aiohttp.ServerDisconnectedError(LEAK), StateUnavailable, "stateUnavailable"),
    (RuntimeError(LEAK), StateError, "stateError"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_each_failure_gets_its_class_and_an_own_message(raised: Exception, ours: type[PasskeyGuardError],
                                                        code: str) -> None:
    """The translation picks the class a caller acts on (retry, refuse, 404, conflict), names the action, and
    copies nothing of the SDK's message."""
    got = translate(raised, "reading a flag")
    assert type(got) is ours and got.code == code
    assert "reading a flag" in got.message
    assert "SECRET" not in got.message and "someone@example.com" not in got.message
    assert "SECRET" not in repr(got.detail)


def test_the_detail_says_status_and_storage_code_only_when_known() -> None:
    """A storage answer's status and code go into `detail` (plain strings, never SDK enums); a network error has
    none to give."""
    got = translate(sdk(ResourceNotFoundError, 404, "ResourceNotFound"), "reading a run")
    assert got.detail == {"status": 404, "storageCode": "ResourceNotFound"}
    assert translate(sdk(ServiceRequestError), "reading a run").detail is None


def test_an_error_of_ours_passes_through_unchanged() -> None:
    """What is already ours (an InputError raised inside the block) is returned as it is, not rewrapped."""
    mine = InputError("bad user id")
    assert translate(mine, "reading a flag") is mine


def test_the_status_and_code_are_read_where_the_sdk_puts_them() -> None:
    """`status_of` falls back to the response's status; `error_code` turns an enum into its value and gives
    None when the SDK (or Azurite) left it out."""

    class Response:
        status_code = 409

    from_response = HttpResponseError(message="x")
    from_response.response = Response()  # type: ignore[assignment]
    assert status_of(from_response) == 409 and is_conflict(from_response)
    assert status_of(ValueError("x")) is None and error_code(ValueError("x")) is None
    assert error_code(sdk(ResourceExistsError, 409, "EntityAlreadyExists")) == "EntityAlreadyExists"
    assert container_missing(sdk(ResourceNotFoundError, 404, "TableNotFound"))
    assert not container_missing(sdk(HttpResponseError, 404, "TableNotFound"))  # only a not-found says so
    assert not is_conflict(sdk(HttpResponseError, 400, "InvalidInput"))


async def test_storage_errors_translates_across_an_await_and_keeps_the_cause() -> None:
    """Inside the block an SDK or network exception raised after an `await` comes out as ours, chained to it."""

    async def failing() -> None:
        await asyncio.sleep(0)
        raise sdk(ResourceModifiedError, 412, "UpdateConditionNotSatisfied")

    with pytest.raises(ConcurrencyError) as caught, storage_errors("saving a flag"):
        await failing()
    assert isinstance(caught.value.__cause__, ResourceModifiedError)


def test_storage_errors_leaves_other_exceptions_alone() -> None:
    """A bug (a KeyError, a ValueError) and our own errors are not dressed up as storage failures."""
    with pytest.raises(KeyError), storage_errors("reading a flag"):
        raise KeyError("userId")
    with pytest.raises(ValueError), storage_errors("reading a flag"):
        raise ValueError("not storage")
    mine = NotFound("no such plan")
    with pytest.raises(NotFound) as caught, storage_errors("reading a plan"):
        raise mine
    assert caught.value is mine


@pytest.fixture
async def table(azurite: Azurite) -> AsyncIterator[TableClient]:
    async with TableClient.from_connection_string(azurite.connection_string,
                                                  table_name=f"errors{uuid.uuid4().hex[:12]}") as client:
        await client.create_table()
        try:
            yield client
        finally:
            await client.delete_table()


async def test_what_azurite_raises_through_the_sdk_is_translated(table: TableClient) -> None:
    """The SDK's own exceptions from a real account: a missing row is NotFound, a create that collides inside a
    transaction (the SDK's TableTransactionError, no ResourceExistsError) is a ConcurrencyError."""
    row: dict[str, Any] = {"PartitionKey": "p", "RowKey": "r"}
    with pytest.raises(NotFound), storage_errors("reading a row"):
        await table.get_entity("p", "r")
    await table.create_entity(row)
    with pytest.raises(ConcurrencyError), storage_errors("writing rows"):
        await table.submit_transaction([("create", {**row, "RowKey": "s"}), ("create", row)])
    with pytest.raises(ConcurrencyError), storage_errors("writing a row"):
        await table.create_entity(row)
