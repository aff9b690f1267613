"""pydantic's errors in the project's words (shared/schemas/problems.py): JSON paths, and a problem per item."""
from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import Field, StringConstraints, ValidationError, field_validator

from shared.schemas.base import StrictModel
from shared.schemas.problems import ROOT_FIELD, path_of, problem, problems_of


class Inner(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=3)]
    count: int = Field(default=0, ge=0)


class Outer(StrictModel):
    inner: Inner
    items: list[Inner] = []
    flag: bool = False
    tags: list[str] = []

    @field_validator("tags")
    @classmethod
    def _distinct(cls, tags: list[str]) -> list[str]:
        repeats = [(f"[{i}]", "repeated") for i, tag in enumerate(tags) if tag in tags[:i]]
        if repeats:
            raise problem("repeated", at=repeats)
        return tags


def found(doc: object) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate(doc)
    return problems_of(caught.value)


def test_paths_are_written_as_in_the_json() -> None:
    """Keys join with dots, indexes in brackets; union tags and dict-key markers are left out."""
    assert path_of(("a", 0, "b", "<object>", "c")) == "a[0].b.c"
    assert path_of(("names", "k", "[key]")) == "names.k"
    assert path_of(()) == ""


def test_each_problem_is_named_in_the_projects_words() -> None:
    """Type, emptiness, range, unknown and missing fields each say what is wrong, at their path."""
    got = found({"inner": {"name": "", "count": -1}, "items": [{"name": "abcd"}, {}], "flag": "yes", "x": 1})
    assert {"field": "inner.name", "problem": "must not be empty"} in got
    assert {"field": "inner.count", "problem": "must be 0 or more"} in got
    assert {"field": "items[0].name", "problem": "must be at most 3 characters"} in got
    assert {"field": "items[1].name", "problem": "required field missing"} in got
    assert {"field": "flag", "problem": "must be true or false, got string"} in got
    assert {"field": "x", "problem": "unknown field"} in got


def test_a_rule_over_many_values_names_each_item() -> None:
    """A validator's problem(at=...) becomes one problem per sub-path."""
    got = found({"inner": {"name": "a"}, "tags": ["a", "b", "a", "a"]})
    assert got == [{"field": "tags[2]", "problem": "repeated"}, {"field": "tags[3]", "problem": "repeated"}]


def test_a_wrong_root_is_named_as_the_document_itself() -> None:
    """A document that is not an object is refused at the root, by name (a refused null: tests/schemas/test_base.py)."""
    assert found([1]) == [{"field": ROOT_FIELD, "problem": "must be an object, got array"}]
