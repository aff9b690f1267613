"""The base of every model here: unknown fields refused, no type coercion, optional means absent.

`StrictModel` is what `extra="forbid"` alone does not say: `"yes"` is not `true` (strict), and an optional
field is left out rather than sent as `null` (a `null` is refused naming the type the field wants, and the
generated JSON Schema has no `null` in it). A model whose senders write `null` for "absent" (the ticket
webhook) sets `nulls_are_absent`.
"""
from __future__ import annotations

import types
import typing
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from shared.schemas.problems import problem


def drop_nulls(schema: dict[str, Any]) -> None:
    """A generated schema without `null` among a property's types or as its default."""
    for prop in schema.get("properties", {}).values():
        variants = prop.get("anyOf")
        if isinstance(variants, list) and {"type": "null"} in variants:
            rest = [v for v in variants if v != {"type": "null"}]
            prop.pop("anyOf")
            if len(rest) == 1:
                prop.update(rest[0])
            else:
                prop["anyOf"] = rest
        if "default" in prop and prop["default"] is None:
            del prop["default"]


def _kind(annotation: Any) -> str:
    """What a field wants, in words ("a string"), for the message that refuses a null."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kind(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        kinds = [_kind(a) for a in typing.get_args(annotation) if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else "a value"
    base = origin or annotation
    if isinstance(base, type):
        if issubclass(base, bool):
            return "true or false"
        if issubclass(base, str):
            return "a string"
        if issubclass(base, int):
            return "a whole number"
        if issubclass(base, list | tuple):
            return "an array"
        if issubclass(base, dict | BaseModel):
            return "an object"
    return "a value"


class StrictModel(BaseModel):
    """Unknown fields refused, no coercion, frozen; `null` only where `nulls_are_absent`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, json_schema_extra=drop_nulls)
    nulls_are_absent: ClassVar[bool] = False

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and not cls.nulls_are_absent:
            field = cls.model_fields[str(info.field_name)]
            raise problem(f"must be {_kind(field.annotation)}, got null")
        return value
