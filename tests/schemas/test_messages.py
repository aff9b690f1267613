"""Queue messages (shared/schemas/messages.py): what the producers write is read back; anything else is refused
naming the field."""
from __future__ import annotations

import json

import pytest

from shared.errors import InputError
from shared.schemas.messages import (
    LifecycleMessage,
    UsersMessage,
    parse_change_message,
    parse_passkey_message,
    parse_policy_job,
)

USER = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


def raw(message: object) -> bytes:
    return json.dumps(message).encode()


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
    """users_message (with the sweep's entry fields), lifecycle_message and job_message, stamped as sent, parse
    back as their models with every field intact."""
    from shared.policy.jobs import job_message
    from shared.upn.intake import LifecycleEvent
    from shared.upn.messages import lifecycle_message, users_message

    entries = [{"id": USER, "upn": "new@contoso.com", "seenAt": "2026-01-01T00:00:00Z", "oldUpn": "old@contoso.com",
                "oldUpnSeenAt": "2025-12-31T00:00:00Z"}, {"id": USER, "removed": "deleted"}]
    sent = {**users_message(entries, source="ticket", ticket_id="INC-9", old_upn="old@contoso.com"),
            "tenant": "t", "runId": "r"}
    parsed = parse_change_message(raw(sent))
    assert isinstance(parsed, UsersMessage)
    assert parsed.model_dump(mode="json", exclude_none=True) == sent
    assert [u.model_dump(exclude_none=True) for u in parsed.users] == entries
    lifecycle = {**lifecycle_message(LifecycleEvent("reauthorizationRequired", "s", "t")), "tenant": "t"}
    parsed_lifecycle = parse_change_message(raw(lifecycle))
    assert isinstance(parsed_lifecycle, LifecycleMessage)
    assert parsed_lifecycle.model_dump(mode="json", exclude_none=True) == lifecycle
    job = job_message("r1", "t", "apply")
    assert parse_policy_job(raw(job)).model_dump(mode="json") == job


def test_a_producer_cannot_write_what_the_consumer_would_refuse() -> None:
    """An entry field the model does not know fails in users_message, not on the queue trigger."""
    from pydantic import ValidationError

    from shared.upn.messages import users_message

    with pytest.raises(ValidationError, match="upm"):
        users_message([{"id": USER, "upm": "typo@contoso.com"}], source="sweep")


def test_a_slow_lane_message_is_what_its_producer_wrote() -> None:
    """passkey_reads_message, stamped as sent, parses back with every entry field intact."""
    from shared.upn.messages import passkey_reads_message

    entries = [{"id": USER, "upn": "new@contoso.com", "oldUpn": "old@contoso.com", "detectedAt": "2026-01-01T00:00:00Z",
                "oldUpnSeenAt": "2025-12-31T00:00:00Z", "oldUpnOrigin": "snapshot", "holder": True},
               {"id": USER, "upn": "b@contoso.com", "oldUpn": "a@contoso.com", "detectedAt": "2026-01-01T00:00:00Z"}]
    sent = {**passkey_reads_message(entries, source="sweep"), "tenant": "t", "runId": "r"}
    parsed = parse_passkey_message(raw(sent))
    assert parsed.model_dump(mode="json", exclude_none=True) == sent
    assert [u.model_dump(exclude_none=True) for u in parsed.users] == entries


@pytest.mark.parametrize(("message", "named"), [
    ({"kind": "passkeys", "users": [{"id": USER, "upn": "n", "oldUpn": "o"}]},
     "queue message users[0].detectedAt: required field missing"),
    ({"kind": "passkeys", "users": [{"id": USER, "upn": "n", "oldUpn": "o", "detectedAt": "t",
                                     "oldUpnOrigin": "rumour"}]}, "queue message users[0].oldUpnOrigin: "),
    ({"kind": "passkeys", "users": [{"id": USER, "upn": "n", "oldUpn": "o", "detectedAt": "t"}] * 21},
     "queue message users: must have at most 20 entries"),
    ({"kind": "users", "users": [{"id": USER}]}, "queue message kind: "),
])
def test_a_malformed_slow_lane_message_names_the_field(message: dict, named: str) -> None:
    """A `passkey-reads` message that is not the slow lane's shape is refused naming the field."""
    with pytest.raises(InputError) as caught:
        parse_passkey_message(raw(message))
    assert caught.value.message.startswith(named)
