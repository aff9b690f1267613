"""StrictModel, the base of every model: unknown fields refused, no coercion, frozen, and `null` refused naming the
type the field wants (or taken as absent where the senders write it so), with no `null` in the generated schema."""
from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from pydantic import StringConstraints, ValidationError

from shared.schemas.base import StrictModel, drop_nulls
from shared.schemas.problems import problems_of


class Inner(StrictModel):
    name: str


class Kinds(StrictModel):
    text: str | None = None
    short: Annotated[str, StringConstraints(max_length=3)] | None = None
    count: int | None = None
    flag: bool | None = None
    items: list[str] | None = None
    pair: tuple[int, int] | None = None
    mapping: dict[str, str] | None = None
    inner: Inner | None = None
    either: int | str | None = None


class Lenient(StrictModel):
    nulls_are_absent = True
    name: str
    count: int | None = None


def problems(model: type[StrictModel], doc: Any) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(doc)
    return problems_of(caught.value)


@pytest.mark.parametrize(("field", "wants"), [
    ("text", "a string"), ("short", "a string"), ("count", "a whole number"), ("flag", "true or false"),
    ("items", "an array"), ("pair", "an array"), ("mapping", "an object"), ("inner", "an object"),
    ("either", "a value"),
])
def test_null_is_refused_naming_what_the_field_wants(field: str, wants: str) -> None:
    """An optional field is left out, not sent as null: a null says, in words, the type the field wants."""
    assert problems(Kinds, {field: None}) == [{"field": field, "problem": f"must be {wants}, got null"}]


def test_null_is_refused_at_its_path_in_a_nested_model() -> None:
    """The refusal names the field by its path, whichever model it sits in."""
    assert problems(Kinds, {"inner": {"name": None}}) == [{"field": "inner.name", "problem": "must be a string, "
                                                                                             "got null"}]


def test_where_senders_write_null_for_absent_it_is_taken_as_absent() -> None:
    """With `nulls_are_absent` an optional field sent as null reads as not sent; a field that is not optional
    still refuses it, by its type."""
    assert Lenient.model_validate({"name": "a", "count": None}) == Lenient.model_validate({"name": "a"})
    assert problems(Lenient, {"name": None}) == [{"field": "name", "problem": "must be a string, got null"}]
    assert problems(Kinds, {"count": None}) != []  # the same null, without the setting


def test_values_are_not_coerced() -> None:
    """"yes" is not true, "1" is not 1, 1 is not "1": each is refused, not converted."""
    got = problems(Kinds, {"flag": "yes", "count": "1", "text": 1})
    assert {p["field"] for p in got} == {"flag", "count", "text"}


def test_unknown_fields_are_refused_and_models_are_frozen() -> None:
    """A field the model does not define is a problem; a validated model cannot be changed afterwards."""
    assert problems(Inner, {"name": "a", "nmae": "b"}) == [{"field": "nmae", "problem": "unknown field"}]
    inner = Inner.model_validate({"name": "a"})
    with pytest.raises(ValidationError):
        inner.name = "b"  # type: ignore[misc]


def test_the_generated_schema_has_no_null() -> None:
    """Optional fields appear with their own type only, and without a `null` default."""
    schema = Kinds.model_json_schema()
    assert "null" not in json.dumps(schema)
    props = schema["properties"]
    assert props["count"] == {"title": "Count", "type": "integer"}
    assert props["short"] == {"title": "Short", "type": "string", "maxLength": 3}
    assert props["either"] == {"title": "Either", "anyOf": [{"type": "integer"}, {"type": "string"}]}


def test_drop_nulls_leaves_other_defaults_and_types_alone() -> None:
    """Only a `null` variant or a `null` default goes; a real default and a non-null union stay."""
    schema: dict[str, Any] = {"properties": {
        "a": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "b": {"type": "boolean", "default": False},
        "c": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    }}
    drop_nulls(schema)
    assert schema == {"properties": {"a": {"type": "string"}, "b": {"type": "boolean", "default": False},
                                     "c": {"anyOf": [{"type": "integer"}, {"type": "string"}]}}}
