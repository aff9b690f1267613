"""Our own webhook (tickets) is strict about its body; Graph's and Event Grid's payloads stay tolerant,
because Microsoft adds properties to them without notice."""
from __future__ import annotations

import json

import pytest

from shared.errors import AuthError, InputError
from shared.upn.event_grid_events import parse_event_grid_batch
from shared.upn.graph_notifications import parse_change_notifications, parse_lifecycle_notifications
from shared.upn.ticket_webhook import verify_ticket
from tests.upn.intake_samples import (
    NOW,
    SECRET,
    TENANT,
    TICKET_SECRET,
    USER,
    body_of,
    cloud_event,
    lifecycle,
    notification,
    ticket,
    verify,
)


@pytest.mark.parametrize("field", ["extra", "userid", "EventId", "__proto__", "$schema"])
def test_an_unknown_ticket_field_is_a_400_naming_it(field: str) -> None:
    """A signed ticket with a field the webhook does not define is refused, and the field is named."""
    with pytest.raises(InputError) as caught:
        verify(ticket(**{field: "x"}))
    message = caught.value.message
    assert message.startswith((f"{field}: unknown field", f"body: unknown field '{field}'")), message


def test_an_unknown_ticket_field_is_checked_only_after_the_signature() -> None:
    """A bad signature stays a 401 whatever the body holds (the body is parsed only once it is authentic)."""
    raw = ticket(extra="x")
    with pytest.raises(AuthError):
        verify_ticket(raw, {"X-Timestamp": str(int(NOW.timestamp())), "X-Signature": "sha256=" + "0" * 64},
                      secret=TICKET_SECRET, now=NOW)


@pytest.mark.parametrize(("fields", "message"), [
    ({"userId": 7}, "userId: expected a string"),
    ({"ticketId": ["INC-1"]}, "ticketId: expected a string"),
    ({"action": True}, "action: expected a string"),
    ({"oldUpn": {"v": "a@b.c"}}, "oldUpn: expected a string"),
])
def test_a_ticket_field_of_the_wrong_type_is_a_400_naming_it(fields: dict, message: str) -> None:
    """Wrong JSON types are refused by name, not coerced."""
    with pytest.raises(InputError) as caught:
        verify(ticket(**fields))
    assert caught.value.message.startswith(message)


def test_every_documented_ticket_field_is_still_accepted() -> None:
    """The strictness adds no refusal of a field the webhook documents."""
    event = verify(ticket(userPrincipalName="a@contoso.com", oldUpn="a@old.com", newUpn="a@contoso.com",
                          ticketId="INC-1"))
    assert event.user_id == USER and event.ticket_id == "INC-1"


def test_graph_change_notifications_tolerate_unknown_properties() -> None:
    """Graph adds properties to notifications (item and resourceData): they are ignored, the item accepted."""
    item = notification(newGraphProperty={"x": 1}, lifecycleNotificationUrl="https://example.invalid")
    item["resourceData"]["sequenceNumber"] = 5
    batch = parse_change_notifications(json.dumps({"value": [item], "validationTokens": ["t"]}).encode(),
                                       client_state=SECRET, tenant_id=TENANT)
    assert [n.user_id for n in batch.accepted] == [USER] and batch.rejected == ()


def test_graph_lifecycle_notifications_tolerate_unknown_properties() -> None:
    """A lifecycle item with a property Graph added later is still handled."""
    events = parse_lifecycle_notifications(body_of(lifecycle(someNewField=True)), client_state=SECRET,
                                           tenant_id=TENANT)
    assert [e.event for e in events] == ["reauthorizationRequired"]


def test_event_grid_graph_events_tolerate_unknown_properties() -> None:
    """A CloudEvent with extension attributes and data properties we do not know still yields the user."""
    event = cloud_event(newDataField="x")
    event["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    [notice] = parse_event_grid_batch([event], tenant_id=TENANT, client_state=SECRET).notices
    assert notice.user_id == USER
