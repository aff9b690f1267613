"""Documents <-> Table entities, and the service limits Azurite does not enforce.

A *document* is a plain dict with identifier-like keys. Each top-level value becomes one typed
property when it can (str, bool, int, float, timezone-aware datetime -> Edm.DateTime); dicts, lists,
over-long strings and ints beyond Int64 become JSON. JSON that fits in one property (32,000 ASCII
characters, under the 64 KiB limit) is stored as `<name>__json`; larger JSON is zlib-compressed,
base64-encoded and split over `<name>__z0`, `<name>__z1`, … with the chunk count in `<name>__zn`.
Datetimes nested inside JSON survive as `{"__datetime__": "<ISO 8601>"}`.

`None` values are not stored (Table Storage has no null): they come back as absent keys.

Limits enforced here because Azurite doesn't: 1 MiB per entity, 252 custom properties, 64 KiB per
property; transactions are cut at 100 operations and a byte budget below the 4 MiB request limit.
"""
from __future__ import annotations

import base64
import datetime as dt
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from azure.data.tables import EdmType, EntityProperty

from shared.errors import InputError, PayloadTooLarge

MAX_PROPERTY_CHARS = 32_000  # a string property holds 64 KiB of UTF-16: 32,768 characters
MAX_CUSTOM_PROPERTIES = 252  # 255 including PartitionKey, RowKey, Timestamp
MAX_ENTITY_BYTES = 1024 * 1024
MAX_BATCH_OPERATIONS = 100
MAX_BATCH_BYTES = 3_500_000  # estimated wire bytes; the service refuses 4 MiB
SYSTEM_PROPERTIES = frozenset({"PartitionKey", "RowKey", "Timestamp"})

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,199}$")
_CHUNK = re.compile(r"^(?P<field>.+)__z(?P<n>\d+)$")
_DATETIME_TAG = "__datetime__"


# --- JSON with datetimes -------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise InputError("datetimes must be timezone-aware")
        return {_DATETIME_TAG: value.astimezone(dt.UTC).isoformat()}
    raise InputError(f"cannot store a value of type {type(value).__name__}")


def _json_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and _DATETIME_TAG in obj:
        return dt.datetime.fromisoformat(obj[_DATETIME_TAG])
    return obj


def dumps(value: Any) -> str:
    """Compact ASCII JSON; aware datetimes are tagged so that `loads` gives them back."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=_json_default)
    except ValueError as exc:  # NaN / infinity, circular references
        raise InputError(f"value cannot be stored as JSON: {exc}") from None


def loads(text: str) -> Any:
    """The inverse of `dumps`."""
    return json.loads(text, object_hook=_json_hook)


# --- values --------------------------------------------------------------------------------------
def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or "__" in name or name in SYSTEM_PROPERTIES:
        raise InputError(f"field name {name!r} cannot be stored: use letters, digits and single underscores")


def _put_json(props: dict[str, Any], name: str, value: Any) -> None:
    text = dumps(value)
    if len(text) <= MAX_PROPERTY_CHARS:
        props[f"{name}__json"] = text
        return
    packed = base64.b64encode(zlib.compress(text.encode("ascii"), 6)).decode("ascii")
    chunks = [packed[i:i + MAX_PROPERTY_CHARS] for i in range(0, len(packed), MAX_PROPERTY_CHARS)]
    for index, chunk in enumerate(chunks):
        props[f"{name}__z{index}"] = chunk
    props[f"{name}__zn"] = len(chunks)


def encode_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Entity properties (without keys) for `doc`, following the rules in the module docstring."""
    props: dict[str, Any] = {}
    for name, value in doc.items():
        _check_name(name)
        if value is None:
            continue
        if isinstance(value, bool):
            props[name] = value
        elif isinstance(value, int):
            if _INT32[0] <= value <= _INT32[1]:
                props[name] = value
            elif _INT64[0] <= value <= _INT64[1]:
                props[name] = EntityProperty(value, EdmType.INT64)
            else:
                _put_json(props, name, value)
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise InputError(f"field {name!r}: NaN and infinity cannot be stored")
            props[name] = value
        elif isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise InputError(f"field {name!r}: datetimes must be timezone-aware")
            props[name] = value.astimezone(dt.UTC)
        elif isinstance(value, str):
            if _utf16_len(value) <= MAX_PROPERTY_CHARS:
                props[name] = value
            else:
                _put_json(props, name, value)
        elif isinstance(value, (dict, list, tuple)):
            _put_json(props, name, value)
        else:
            raise InputError(f"field {name!r}: cannot store a value of type {type(value).__name__}")
    return props


def plain_value(value: Any) -> Any:
    """An SDK property value as a plain Python value (EntityProperty unwrapped, datetimes plain UTC)."""
    if isinstance(value, EntityProperty):
        value = value.value
    if isinstance(value, dt.datetime):
        utc = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return dt.datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond,
                           tzinfo=dt.UTC)
    return value


def decode_document(entity: Mapping[str, Any], *, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The document stored by `encode_document` (system properties and `skip` left out)."""
    skipped = SYSTEM_PROPERTIES | set(skip)
    doc: dict[str, Any] = {}
    for prop, raw in entity.items():
        if prop in skipped:
            continue
        if prop.endswith("__json"):
            doc[prop[:-6]] = loads(plain_value(raw))
        elif prop.endswith("__zn"):
            field = prop[:-4]
            count = int(plain_value(raw))
            try:
                packed = "".join(plain_value(entity[f"{field}__z{i}"]) for i in range(count))
            except KeyError:
                raise InputError(f"stored field {field!r} is missing a chunk") from None
            doc[field] = loads(zlib.decompress(base64.b64decode(packed)).decode("ascii"))
        elif _CHUNK.match(prop):
            continue
        else:
            doc[prop] = plain_value(raw)
    return doc


# --- limits --------------------------------------------------------------------------------------
def _value_size(value: Any) -> int:
    if isinstance(value, EntityProperty):
        edm = value.edm_type
        if edm == EdmType.INT64 or edm == EdmType.DOUBLE or edm == EdmType.DATETIME:
            return 8
        if edm == EdmType.INT32:
            return 4
        if edm == EdmType.BOOLEAN:
            return 1
        if edm == EdmType.GUID:
            return 16
        value = value.value
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        return 4 if _INT32[0] <= value <= _INT32[1] else 8
    if isinstance(value, (float, dt.datetime)):
        return 8
    if isinstance(value, (bytes, bytearray)):
        return 4 + len(value)
    return 4 + 2 * _utf16_len(str(value))


def entity_size(entity: Mapping[str, Any]) -> int:
    """The entity's size as Azure counts it (4 + 2·len(keys) + per property 8 + 2·len(name) + value)."""
    size = 4 + 2 * _utf16_len(str(entity.get("PartitionKey", ""))) + 2 * _utf16_len(str(entity.get("RowKey", "")))
    for name, value in entity.items():
        if name in SYSTEM_PROPERTIES:
            continue
        size += 8 + 2 * len(name) + _value_size(value)
    return size


def check_entity(entity: Mapping[str, Any]) -> None:
    """PayloadTooLarge when the entity breaks a per-entity limit of the real service."""
    custom = [n for n in entity if n not in SYSTEM_PROPERTIES]
    if len(custom) > MAX_CUSTOM_PROPERTIES:
        raise PayloadTooLarge(f"entity has {len(custom)} properties; Table Storage allows {MAX_CUSTOM_PROPERTIES}",
                              detail={"limit": MAX_CUSTOM_PROPERTIES, "actual": len(custom)})
    for name in custom:
        value = entity[name]
        if isinstance(value, str) and _utf16_len(value) > 32 * 1024:
            raise PayloadTooLarge(f"property {name!r} exceeds 64 KiB")
    size = entity_size(entity)
    if size > MAX_ENTITY_BYTES:
        raise PayloadTooLarge(f"entity is {size} bytes; Table Storage allows {MAX_ENTITY_BYTES}",
                              detail={"limit": MAX_ENTITY_BYTES, "actual": size})


def _wire_size(entity: Mapping[str, Any]) -> int:
    # JSON on the wire: strings about one byte per ASCII character, plus type annotations and headers.
    return entity_size(entity) // 2 + 40 * len(entity) + 400


def chunk_operations(entities: Iterable[Mapping[str, Any]], *, max_operations: int = MAX_BATCH_OPERATIONS,
                     max_bytes: int = MAX_BATCH_BYTES) -> Iterator[list[Mapping[str, Any]]]:
    """Group entities by PartitionKey and cut each group into transactions of <= `max_operations`.

    Never yields an empty or mixed-partition list, nor one over the byte budget (Azurite answers
    transactions of more than 100 operations with a malformed reply, Azure with 400).
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for entity in entities:
        groups.setdefault(str(entity["PartitionKey"]), []).append(entity)
    for group in groups.values():
        batch: list[Mapping[str, Any]] = []
        used = 0
        for entity in group:
            size = _wire_size(entity)
            if batch and (len(batch) >= max_operations or used + size > max_bytes):
                yield batch
                batch, used = [], 0
            batch.append(entity)
            used += size
        if batch:
            yield batch
