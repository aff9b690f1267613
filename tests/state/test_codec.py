"""Unit tests for the entity codec and the limits Azurite doesn't enforce (no Azurite)."""
from __future__ import annotations

import base64
import datetime as dt
import os
from typing import Any

import pytest
from azure.data.tables import EdmType, EntityProperty

from shared.errors import InputError, PayloadTooLarge
from shared.state.codec import (
    MAX_BATCH_OPERATIONS,
    MAX_CUSTOM_PROPERTIES,
    MAX_ENTITY_BYTES,
    MAX_PROPERTY_CHARS,
    check_entity,
    chunk_operations,
    decode_document,
    encode_document,
    entity_size,
)


def noise(chars: int) -> str:
    """Incompressible ASCII text of `chars` characters."""
    return base64.b64encode(os.urandom(chars)).decode()[:chars]


def test_scalars_round_trip_with_their_types() -> None:
    """str, bool, int32, int64, float and aware datetimes come back equal and typed; None is dropped."""
    when = dt.datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    doc = {"s": "x", "b": True, "i": 7, "big": 2**40, "neg": -(2**40), "f": 1.5, "when": when, "gone": None}
    props = encode_document(doc)
    assert isinstance(props["big"], EntityProperty) and props["big"].edm_type == EdmType.INT64
    assert props["i"] == 7 and not isinstance(props["i"], EntityProperty)
    back = decode_document(props)
    assert back == {k: v for k, v in doc.items() if v is not None}
    assert back["when"].tzinfo == dt.UTC


def test_json_fields_keep_nested_datetimes_and_huge_ints() -> None:
    """Dicts and lists become JSON; nested datetimes and ints beyond Int64 survive the round trip."""
    when = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    doc = {"plan": {"at": when, "items": [1, "two", {"three": 3.0}]}, "huge": 2**70, "tags": ["a", "b"]}
    props = encode_document(doc)
    assert "plan__json" in props and "huge__json" in props
    assert decode_document(props) == doc


def test_large_json_is_split_compressed_and_reassembled() -> None:
    """A 200 KB incompressible field is split into chunks under 64 KiB each and decodes to the original."""
    doc = {"before": {"blob": noise(200_000)}, "long_text": noise(50_000)}
    props = encode_document(doc)
    chunks = [k for k in props if k.startswith("before__z") and k != "before__zn"]
    assert len(chunks) == props["before__zn"] >= 4
    assert all(len(props[k]) <= MAX_PROPERTY_CHARS for k in props if isinstance(props[k], str))
    assert decode_document(props) == doc


@pytest.mark.parametrize("name", ["a__b", "PartitionKey", "1abc", "has space", "", "x" * 201])
def test_unstorable_field_names_are_refused(name: str) -> None:
    """Names that could collide with our suffixes or break the service raise InputError."""
    with pytest.raises(InputError):
        encode_document({name: 1})


@pytest.mark.parametrize("value", [dt.datetime(2025, 1, 1), float("nan"), b"bytes", {1, 2}])
def test_unstorable_values_are_refused(value: Any) -> None:
    """Naive datetimes, NaN, bytes and sets raise InputError instead of being silently mangled."""
    with pytest.raises(InputError):
        encode_document({"v": value})


def test_entity_over_one_mib_is_refused() -> None:
    """1 MiB is enforced in code (Azurite accepts more): 40 properties of 30,000 characters properties are rejected."""
    entity = {"PartitionKey": "p", "RowKey": "r", **{f"p{i}": noise(30_000) for i in range(40)}}
    assert entity_size(entity) > MAX_ENTITY_BYTES
    with pytest.raises(PayloadTooLarge):
        check_entity(entity)
    check_entity({"PartitionKey": "p", "RowKey": "r", **{f"p{i}": noise(30_000) for i in range(10)}})


def test_property_count_over_252_is_refused() -> None:
    """252 custom properties pass, 253 raise PayloadTooLarge."""
    ok = {"PartitionKey": "p", "RowKey": "r", **{f"c{i}": i for i in range(MAX_CUSTOM_PROPERTIES)}}
    check_entity(ok)
    with pytest.raises(PayloadTooLarge):
        check_entity({**ok, "one_more": 1})


def test_chunking_never_exceeds_100_or_mixes_partitions() -> None:
    """250 entities of one partition give 100+100+50; several partitions are never mixed in one batch."""
    one = [{"PartitionKey": "p", "RowKey": f"r{i}"} for i in range(250)]
    assert [len(b) for b in chunk_operations(one)] == [100, 100, 50]
    mixed = [{"PartitionKey": f"p{i % 3}", "RowKey": f"r{i}"} for i in range(450)]
    batches = list(chunk_operations(mixed))
    assert all(0 < len(b) <= MAX_BATCH_OPERATIONS for b in batches)
    assert all(len({e["PartitionKey"] for e in b}) == 1 for b in batches)
    assert sorted(e["RowKey"] for b in batches for e in b) == sorted(e["RowKey"] for e in mixed)
    assert list(chunk_operations([])) == []


def test_chunking_respects_the_byte_budget() -> None:
    """Large entities are cut into more, smaller transactions so a request stays under 4 MiB."""
    big = [{"PartitionKey": "p", "RowKey": f"r{i}", "v": noise(30_000)} for i in range(300)]
    batches = list(chunk_operations(big, max_bytes=1_000_000))
    assert len(batches) > 3
    assert sum(len(b) for b in batches) == 300
