"""Queue messages (shared/schemas/messages.py): what the producers write is read back; anything else is refused
naming the field."""
from __future__ import annotations

import json

import pytest

from shared.errors import InputError
from shared.schemas.messages import LifecycleMessage, UsersMessage, parse_change_message, parse_policy_job

USER = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def raw(message: object) -> bytes:
    return json.dumps(message).encode()


def test_a_users_message_as_the_producer_writes_it_is_read() -> None:
    """users_message's shape, stamped with tenant and run id, comes back typed."""
    message = parse_change_message(raw({
        "v": 1, "kind": "users", "source": "sweep", "at": "2026-01-01T00:00:00Z", "ticketId": "INC-1",
        "oldUpn": "old@contoso.com", "tenant": "t", "runId": "r",
        "users": [{"id": USER, "upn": "new@contoso.com", "oldUpn": "old@contoso.com",
                   "seenAt": "2026-01-01T00:00:00Z"}, {"id": USER, "removed": "deleted"}]}))
    assert isinstance(message, UsersMessage)
    assert [u.id for u in message.users] == [USER, USER] and message.users[1].removed == "deleted"
    assert message.ticketId == "INC-1" and message.tenant == "t"


def test_a_lifecycle_message_is_read() -> None:
    """The other kind comes back as its own model."""
    assert isinstance(parse_change_message(raw({"v": 1, "kind": "lifecycle", "event": "missed",
                                                "subscriptionId": "s", "tenant": "t"})), LifecycleMessage)


@pytest.mark.parametrize(("message", "named"), [
    ({"kind": "users", "users": [{"id": USER, "upm": "x"}]}, "queue message users[0].upm: unknown field"),
    ({"kind": "users", "users": []}, "queue message users: must not be empty"),
    ({"kind": "users", "users": [{"upn": "x"}]}, "queue message users[0].id: required field missing"),
    ({"kind": "users", "users": [{"id": USER}] * 21}, "queue message users: must have at most 20 entries"),
    ({"kind": "lifecycle"}, "queue message event: required field missing"),
    ({"kind": "lifecycle", "event": "missed", "extra": 1}, "queue message extra: unknown field"),
])
def test_a_malformed_change_message_names_the_field(message: dict, named: str) -> None:
    """A message that is not one of the shapes is an InputError naming the field and what is wrong."""
    with pytest.raises(InputError) as caught:
        parse_change_message(raw(message))
    assert caught.value.message == named


@pytest.mark.parametrize("body", [b"not json", b"[]", raw({"kind": "rename"}), raw({"kind": "sweep"}),
                                  raw({"users": []})])
def test_a_change_message_without_a_known_kind_is_refused(body: bytes) -> None:
    """Not JSON, not an object or no known kind: an InputError, as before the models."""
    with pytest.raises(InputError, match="queue message"):
        parse_change_message(body)


def test_a_policy_job_is_read_and_a_wrong_one_named() -> None:
    """`{runId, tenantId, kind}` is read; a missing or empty field or another kind is named."""
    job = parse_policy_job(raw({"runId": "r1", "tenantId": "t", "kind": "apply"}))
    assert (job.runId, job.tenantId, job.kind) == ("r1", "t", "apply")
    for bad, field in (({"runId": "", "tenantId": "t", "kind": "plan"}, "runId"),
                       ({"runId": "r", "kind": "plan"}, "tenantId"),
                       ({"runId": "r", "tenantId": "t", "kind": "verify"}, "kind"),
                       ({"runId": "r", "tenantId": "t", "kind": "plan", "x": 1}, "x")):
        with pytest.raises(InputError, match=f"policy job message {field}: "):
            parse_policy_job(raw(bad))
    with pytest.raises(InputError, match="not JSON"):
        parse_policy_job(b"\xff")


def test_what_the_producers_write_is_what_the_models_read() -> None:
    """users_message (with the sweep's entry fields) and the lifecycle message parse back as their models."""
    from shared.upn.messages import MESSAGE_VERSION, users_message

    entries = [{"id": USER, "upn": "new@contoso.com", "seenAt": "2026-01-01T00:00:00Z", "oldUpn": "old@contoso.com",
                "oldUpnSeenAt": "2025-12-31T00:00:00Z"}, {"id": USER, "removed": "deleted"}]
    message = users_message(entries, source="ticket", ticket_id="INC-9", old_upn="old@contoso.com")
    parsed = parse_change_message(raw({**message, "tenant": "t", "runId": "r"}))
    assert isinstance(parsed, UsersMessage)
    assert [u.model_dump(exclude_none=True) for u in parsed.users] == entries
    lifecycle = {"v": MESSAGE_VERSION, "kind": "lifecycle", "event": "reauthorizationRequired", "subscriptionId": "s"}
    assert isinstance(parse_change_message(raw({**lifecycle, "tenant": "t"})), LifecycleMessage)
