"""HTTP request bodies (shared/schemas/bodies.py), read through shared.web.read_body: what each route accepts,
and a 400 naming the field for anything else."""
from __future__ import annotations

import json

import pytest

from shared.errors import InputError
from shared.schemas.bodies import MAX_APPROVALS, ApplyBody, ApprovalBody, DocumentBody
from shared.web import read_body


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_a_document_body_is_empty_or_holds_an_object() -> None:
    """Verify and plan take no body, `{}`, or `{"document": {...}}`; a document that is not an object is named."""
    assert read_body(b"", DocumentBody).document is None
    assert read_body(body({"document": {"a": 1}}), DocumentBody).document == {"a": 1}
    with pytest.raises(InputError, match="field 'document' must be an object, got array"):
        read_body(body({"document": []}), DocumentBody)


def test_an_apply_body_with_its_acceptances() -> None:
    """planId is required; each acceptance names its plan, and the lockout one its number of users."""
    got = read_body(body({"planId": "p", "acceptLockout": {"planId": "p", "users": 0},
                          "acceptNoEmergencyExclusion": {"planId": "p"}}), ApplyBody)
    assert got.acceptLockout is not None and got.acceptLockout.model_dump() == {"planId": "p", "users": 0}
    assert got.acceptNoEmergencyExclusion is not None and got.acceptNoEmergencyExclusion.planId == "p"


@pytest.mark.parametrize(("doc", "message"), [
    ({}, "field 'planId' is required"),
    ({"planId": ""}, "field 'planId' must not be empty"),
    ({"planId": "p", "acceptLockout": {"planId": "p", "users": -1}}, "field 'acceptLockout.users' must be 0 or more"),
    ({"planId": "p", "acceptNoEmergencyExclusion": {}}, "field 'acceptNoEmergencyExclusion.planId' is required"),
    ({"planId": "p", "accept": 1}, "unknown field 'accept'; allowed fields: planId, acceptLockout, "
                                   "acceptNoEmergencyExclusion"),
])
def test_a_wrong_apply_body_names_the_field(doc: dict, message: str) -> None:
    """What the OpenAPI description refuses (minLength, minimum, required, additionalProperties) is a 400."""
    with pytest.raises(InputError) as caught:
        read_body(body(doc), ApplyBody)
    assert caught.value.message == message


def test_an_approval_body_holds_one_to_a_thousand_user_ids() -> None:
    """userIds: 1 to 1000 strings of 1 to 128 characters; anything else names the list or the item."""
    assert read_body(body({"userIds": ["u1", "u2"]}), ApprovalBody).userIds == ["u1", "u2"]
    for ids, field in (([], "userIds"), (["u"] * (MAX_APPROVALS + 1), "userIds"), ([""], "userIds[0]"),
                       (["u", "x" * 129], "userIds[1]"), (["u", 7], "userIds[1]")):
        with pytest.raises(InputError) as caught:
            read_body(body({"userIds": ids}), ApprovalBody)
        assert caught.value.message.startswith(f"field '{field}' "), caught.value.message
