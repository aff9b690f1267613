"""The strict JSON-object reader of shared/web.py: allowed fields with types, everything else a 400 naming it."""
from __future__ import annotations

import json

import pytest

from shared.errors import InputError
from shared.web import Shape, read_strict_object

ACCEPT = Shape({"planId": str, "users": int}, required={"planId", "users"})
APPLY = Shape({"planId": str, "acceptLockout": ACCEPT, "dryRun": bool}, required={"planId"})


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_known_fields_of_the_right_type_pass():
    """A body with only allowed fields of the right types comes back as parsed."""
    doc = {"planId": "p1", "acceptLockout": {"planId": "p1", "users": 3}, "dryRun": False}
    assert read_strict_object(body(doc), APPLY) == doc


def test_an_unknown_field_is_named():
    """An unknown field is a 400 that names it and lists what is allowed."""
    with pytest.raises(InputError) as error:
        read_strict_object(body({"planId": "p", "value": "x"}), APPLY)
    assert "value" in error.value.message and "planId" in error.value.message


@pytest.mark.parametrize(("doc", "name"), [
    ({"planId": 7}, "planId"),
    ({"planId": "p", "dryRun": "yes"}, "dryRun"),
    ({"planId": "p", "acceptLockout": True}, "acceptLockout"),
    ({"planId": "p", "acceptLockout": {"planId": "p", "users": True}}, "acceptLockout.users"),
    ({"planId": "p", "acceptLockout": {"planId": "p", "users": 1.5}}, "acceptLockout.users"),
    ({"planId": "p", "acceptLockout": {"planId": "p", "users": 1, "more": 1}}, "acceptLockout.more"),
    ({"planId": None}, "planId"),
])
def test_a_wrong_type_or_nested_unknown_is_named(doc, name):
    """A wrong type (bool is not a number, null is not a string) or a nested unknown field names its path."""
    with pytest.raises(InputError) as error:
        read_strict_object(body(doc), APPLY)
    assert name in error.value.message


def test_a_missing_required_field_is_named():
    """A required field that is absent is a 400 naming it, nested ones with their path."""
    with pytest.raises(InputError) as error:
        read_strict_object(body({"acceptLockout": {"planId": "p", "users": 1}}), APPLY)
    assert "planId" in error.value.message
    with pytest.raises(InputError) as error:
        read_strict_object(body({"planId": "p", "acceptLockout": {"planId": "p"}}), APPLY)
    assert "acceptLockout.users" in error.value.message


def test_an_empty_body_is_an_empty_object_only_when_nothing_is_required():
    """An empty body reads as {} for a shape without required fields, and is a 400 otherwise."""
    assert read_strict_object(b"", Shape({"document": dict})) == {}
    with pytest.raises(InputError):
        read_strict_object(b"  ", APPLY)
