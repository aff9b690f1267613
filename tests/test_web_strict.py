"""The strict readers of shared/web.py: one JSON parser for untrusted bytes, and request bodies read into their
pydantic models, with allowed fields and types and everything else a 400 naming it."""
from __future__ import annotations

import json

import pytest

from shared.errors import InputError, PayloadTooLarge
from shared.schemas.base import StrictModel
from shared.schemas.bodies import ApplyBody, DocumentBody
from shared.web import parse_json, read_body


class Accept(StrictModel):
    planId: str
    users: int


class Apply(StrictModel):
    planId: str
    acceptLockout: Accept | None = None
    dryRun: bool | None = None


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_known_fields_of_the_right_type_pass():
    """A body with only allowed fields of the right types comes back as parsed."""
    doc = {"planId": "p1", "acceptLockout": {"planId": "p1", "users": 3}, "dryRun": False}
    assert read_body(body(doc), Apply).model_dump() == doc


def test_an_unknown_field_is_named():
    """An unknown field is a 400 that names it and lists what is allowed."""
    with pytest.raises(InputError) as error:
        read_body(body({"planId": "p", "value": "x"}), Apply)
    assert "value" in error.value.message and "planId" in error.value.message


@pytest.mark.parametrize(("doc", "name"), [
    ({"planId": 7}, "planId"),
    ({"planId": "p", "dryRun": "yes"}, "dryRun"),
    ({"planId": "p", "acceptLockout": True}, "acceptLockout"),
    ({"planId": "p", "acceptLockout": {"planId": "p", "users": True}}, "acceptLockout.users"),
    ({"planId": "p", "acceptLockout": {"planId": "p", "users": 1.5}}, "acceptLockout.users"),
    ({"planId": "p", "acceptLockout": {"planId": "p", "users": 1, "more": 1}}, "acceptLockout.more"),
    ({"planId": None}, "planId"),
    ({"planId": "p", "acceptLockout": None}, "acceptLockout"),
])
def test_a_wrong_type_or_nested_unknown_is_named(doc, name):
    """A wrong type (bool is not a number, null is not a string nor an absent field) or a nested unknown field
    names its path."""
    with pytest.raises(InputError) as error:
        read_body(body(doc), Apply)
    assert name in error.value.message


def test_a_nested_unknown_field_lists_the_nested_fields():
    """An unknown nested field is named with the fields allowed where it was found."""
    with pytest.raises(InputError) as error:
        read_body(body({"planId": "p", "acceptLockout": {"planId": "p", "users": 1, "more": 1}}), Apply)
    assert error.value.message == "unknown field 'acceptLockout.more'; allowed fields: planId, users"


def test_a_missing_required_field_is_named():
    """A required field that is absent is a 400 naming it, nested ones with their path."""
    with pytest.raises(InputError) as error:
        read_body(body({"acceptLockout": {"planId": "p", "users": 1}}), Apply)
    assert "planId" in error.value.message
    with pytest.raises(InputError) as error:
        read_body(body({"planId": "p", "acceptLockout": {"planId": "p"}}), Apply)
    assert "acceptLockout.users" in error.value.message


def test_every_problem_is_in_the_detail():
    """The message names the first problem; the detail lists each one as {field, problem}."""
    with pytest.raises(InputError) as error:
        read_body(body({"planId": 1, "acceptLockout": {"planId": "p", "users": -1}, "x": 1}), ApplyBody)
    assert {p["field"] for p in error.value.detail} == {"planId", "acceptLockout.users", "x"}


def test_an_empty_body_is_an_empty_object_only_when_nothing_is_required():
    """An empty body reads as {} for a model without required fields, and is a 400 otherwise."""
    assert read_body(b"", DocumentBody).document is None
    with pytest.raises(InputError):
        read_body(b"  ", Apply)


@pytest.mark.parametrize(("raw", "message"), [
    (b" ", "body: empty"),
    (b"{not json", "body: not valid JSON"),
    (b"\xff\xfe", "body: not UTF-8"),
    (b'{"a": NaN}', "body: not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "body: JSON nested too deeply"),
])
def test_the_one_json_reader_names_what_is_wrong(raw, message):
    """parse_json refuses what is not strict JSON with "<what>: <problem>"; the detail says where it broke."""
    with pytest.raises(InputError) as error:
        parse_json(raw)
    assert error.value.message == message
    assert type(error.value) is InputError


def test_the_one_json_reader_refuses_oversize_before_parsing():
    """Over the limit is a 413, whatever the bytes."""
    with pytest.raises(PayloadTooLarge):
        parse_json(b"{}" + b" " * 10, limit=4)
    with pytest.raises(InputError) as error:
        parse_json('{"a": ', what="(document)", limit=None)
    assert error.value.detail == [{"field": "(document)", "problem": "not valid JSON at line 1 column 7"}]
