"""The hot-path table operations against Azurite: a transaction written on the wire format lands exactly as the
SDK's own would, all or nothing, with the SDK's exceptions on failure (which `storage_errors` translates); point
reads return plain values or None; what the fast path does not cover goes to the SDK."""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, UpdateMode
from azure.data.tables.aio import TableClient

from devhost.azurite import Azurite
from shared.errors import ConcurrencyError, NotFound, StateError
from shared.state import fastpath
from shared.state.errors import container_missing, storage_errors

#: Keys with what must be escaped in a URL and a quote, which OData doubles.
ODD_KEY = "o'brien 100% +ü&=;,"
RICH = {"text": "grüße \"quoted\" \u2603", "small": 7, "large": EntityProperty(2**40, EdmType.INT64), "ratio": 0.25,
        "yes": True,
        "when": dt.datetime(2026, 3, 1, 12, 30, 15, tzinfo=dt.UTC), "raw": b"\x00\xffbytes",
        "guid": uuid.UUID("cb69481e-8ff7-4039-93ec-0a2729a154a8")}


@pytest.fixture
async def table(azurite: Azurite) -> AsyncIterator[TableClient]:
    """A fresh table of its own on the session Azurite."""
    async with TableClient.from_connection_string(azurite.connection_string,
                                                  table_name=f"fastpath{uuid.uuid4().hex[:12]}") as client:
        await client.create_table()
        try:
            yield client
        finally:
            await client.delete_table()


def row(pk: str, rk: str, **fields: Any) -> dict[str, Any]:
    return {"PartitionKey": pk, "RowKey": rk, **fields}


async def values(client: TableClient, pk: str) -> dict[str, dict[str, Any]]:
    """The rows of a partition as the SDK reads them, by RowKey, without keys and metadata."""
    found = {}
    async for entity in client.query_entities("PartitionKey eq @pk", parameters={"pk": pk}):
        found[entity["RowKey"]] = {k: v for k, v in entity.items() if k not in ("PartitionKey", "RowKey")}
    return found


async def test_a_transaction_lands_exactly_as_the_sdks_own(table: TableClient) -> None:
    """Create, merge and replace upserts, conditional and unconditional updates and deletes, with every entity
    property type and odd keys: the rows are what the same operations through `submit_transaction` give."""
    for pk in ("fast", "sdk"):
        await table.submit_transaction([("create", row(pk, "merged", keep="old", change="old")),
                                        ("create", row(pk, "replaced", gone="old")),
                                        ("create", row(pk, "updated", n=1)),
                                        ("create", row(pk, "deleted")), ("create", row(pk, "deleted-if", n=1))])

    async def operations(pk: str) -> list[tuple[Any, ...]]:
        updated = await table.get_entity(pk, "updated")
        deleted_if = await table.get_entity(pk, "deleted-if")
        return [("create", row(pk, ODD_KEY, **RICH)),
                ("upsert", row(pk, "merged", change="new")),
                ("upsert", row(pk, "replaced", only="new"), {"mode": UpdateMode.REPLACE}),
                ("update", row(pk, "updated", n=2), {"mode": UpdateMode.REPLACE, "etag": updated.metadata["etag"],
                                                      "match_condition": MatchConditions.IfNotModified}),
                ("upsert", row(pk, "new-merge", n=3)),
                ("delete", row(pk, "deleted")),
                ("delete", row(pk, "deleted-if"), {"etag": deleted_if.metadata["etag"],
                                                   "match_condition": MatchConditions.IfNotModified})]

    await fastpath.submit(table, await operations("fast"))
    await table.submit_transaction(await operations("sdk"))  # type: ignore[arg-type]  # the SDK's tuple shapes
    fast, sdk = await values(table, "fast"), await values(table, "sdk")
    assert fast == sdk
    assert fast[ODD_KEY] == RICH
    assert fast["merged"] == {"keep": "old", "change": "new"} and fast["replaced"] == {"only": "new"}
    assert set(fast) == {ODD_KEY, "merged", "replaced", "updated", "new-merge"}


async def test_a_failed_operation_fails_the_whole_transaction(table: TableClient) -> None:
    """A create of a row that exists is a 409 ResourceExistsError, and the row created beside it is not there."""
    await fastpath.submit(table, [("create", row("p", "taken"))])
    with pytest.raises(ResourceExistsError) as caught:
        await fastpath.submit(table, [("create", row("p", "fresh")), ("create", row("p", "taken"))])
    assert caught.value.status_code == 409 and caught.value.error_code == "EntityAlreadyExists"
    assert await fastpath.get(table, "p", "fresh") is None


async def test_a_stale_etag_is_a_412_that_storage_errors_calls_a_concurrency_error(table: TableClient) -> None:
    """An update or delete whose ETag no longer matches is ResourceModifiedError; translated, somebody else wrote
    first, and the row keeps the other writer's value."""
    await fastpath.submit(table, [("create", row("p", "r", n=1))])
    stale = (await table.get_entity("p", "r")).metadata["etag"]
    await fastpath.submit(table, [("upsert", row("p", "r", n=2))])
    condition = {"etag": stale, "match_condition": MatchConditions.IfNotModified}
    for operation in (("update", row("p", "r", n=3), condition), ("delete", row("p", "r"), condition)):
        with pytest.raises(ResourceModifiedError):
            await fastpath.submit(table, [operation])
        with pytest.raises(ConcurrencyError), storage_errors("writing a row"):
            await fastpath.submit(table, [operation])
    assert (await table.get_entity("p", "r"))["n"] == 2


async def test_deleting_a_missing_row_is_not_found(table: TableClient) -> None:
    """An unconditional delete of a row that is not there is ResourceNotFoundError, NotFound once translated."""
    with pytest.raises(NotFound), storage_errors("deleting a row"):
        await fastpath.submit(table, [("delete", row("p", "nobody"))])


async def test_a_missing_table_is_told_apart_from_a_missing_row(azurite: Azurite) -> None:
    """Against a table that does not exist (an in-memory Azurite restarted), a transaction and a read both raise
    TableNotFound, which `container_missing` recognises and `storage_errors` reports as a StateError."""
    async with TableClient.from_connection_string(azurite.connection_string, table_name="fastpathnever") as client:
        for attempt in (fastpath.submit(client, [("upsert", row("p", "r"))]), fastpath.get(client, "p", "r")):
            with pytest.raises(ResourceNotFoundError) as caught:
                await attempt
            assert container_missing(caught.value)
        with pytest.raises(StateError) as translated, storage_errors("reading a row"):
            await fastpath.get(client, "p", "r")
        assert not isinstance(translated.value, NotFound)


async def test_a_point_read_returns_plain_values_or_none(table: TableClient) -> None:
    """`get` gives the row's fields as plain JSON without metadata, only the selected ones when asked, and None
    for a row that is not there."""
    await fastpath.submit(table, [("create", row("p", ODD_KEY, upn="a@example.com", old="b@example.com"))])
    whole = await fastpath.get(table, "p", ODD_KEY)
    assert whole is not None and whole["upn"] == "a@example.com" and whole["RowKey"] == ODD_KEY
    assert not any(key.startswith("odata.") for key in whole)
    assert await fastpath.get(table, "p", ODD_KEY, select=["upn"]) == {"upn": "a@example.com"}
    assert await fastpath.get(table, "p", "nobody") is None


async def test_what_the_fast_path_does_not_cover_goes_to_the_sdk(table: TableClient,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An operation with a keyword the fast path does not know is left to `submit_transaction`: the whole
    transaction goes there, and it lands."""
    await fastpath.submit(table, [("create", row("p", "r", n=1))])
    sent: list[int] = []
    real = table.submit_transaction

    async def spy(operations: Any, **kwargs: Any) -> Any:
        sent.append(len(operations))
        return await real(operations, **kwargs)

    monkeypatch.setattr(table, "submit_transaction", spy)
    await fastpath.submit(table, [("upsert", row("p", "other")),
                                  ("upsert", row("p", "r", n=2), {"mode": UpdateMode.MERGE, "timeout": 5})])
    assert sent == [2] and (await table.get_entity("p", "r"))["n"] == 2
    assert await fastpath.get(table, "p", "other") is not None


@pytest.mark.parametrize("operation", [
    ("upsert", row("p", "r"), {"mode": UpdateMode.MERGE, "timeout": 5}),  # a keyword it does not know
    ("upsert", row("p", "r"), {"etag": "W/\"x\""}),  # an upsert is never conditional
    ("update", row("p", "r"), {"match_condition": MatchConditions.IfNotModified}),  # no ETag to send
    ("update", row("p", "r"), {"etag": "W/\"x\"", "match_condition": MatchConditions.IfModified}),
    ("delete", row("p", "r"), {"etag": "W/\"x\""}),  # an ETag without saying how to match it
    ("copy", row("p", "r")),
], ids=["unknown-keyword", "conditional-upsert", "update-without-etag", "if-modified", "delete-etag-only",
        "unknown-kind"])
def test_operations_outside_the_fast_path_are_declined(operation: tuple[Any, ...]) -> None:
    """`build_operation` declines (None) rather than guess what the SDK would send."""
    assert fastpath.build_operation("http://127.0.0.1/acct/t", operation, "2019-02-02", 0) is None
