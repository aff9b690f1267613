"""Samples and helpers shared by the intake tests: Microsoft's published payloads for our tenant, signed
tickets, and the hypothesis strategies of JSON junk."""
from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from shared.errors import AuthError, InputError, PayloadTooLarge
from shared.upn import intake
from shared.upn.graph_notifications import (
    parse_change_notifications,
)
from shared.upn.ticket_webhook import TicketEvent, sign_ticket, verify_ticket
from tests import payloads

TENANT = "11111111-2222-3333-4444-555555555555"
OTHER_TENANT = "99999999-2222-3333-4444-555555555555"
SECRET = "client-state-secret-42"
USER = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
USER2 = "bbbbbbbb-bbbb-cccc-dddd-eeeeeeeeeeee"
SUB = "0f0f0f0f-0000-0000-0000-000000000001"
TICKET_SECRET = "ticket-shared-secret"
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

#: "<field path>: <what is wrong>", e.g. "value[3].resourceData.id: missing" or "body: not valid JSON".
FIELD_MESSAGE = re.compile(r"^[A-Za-z][\w.@\[\]-]*: \S.*$")
ESCAPING = (InputError, AuthError, PayloadTooLarge)


def published(name: str, user: str = USER) -> Any:
    """Microsoft's published payload `name` (tests/payloads) for `user` in TENANT, with our clientState."""
    return payloads.load(name, tenant_id=TENANT, user_id=user, client_state=SECRET, subscription_id=SUB)


def notification(user: str = USER, **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = published("notification-user-updated", user)["value"][0]
    item.update(overrides)
    return item


def body_of(*items: Any) -> bytes:
    return json.dumps({"value": list(items)}).encode()


def parse(*items: Any) -> intake.NotificationBatch:
    return parse_change_notifications(body_of(*items), client_state=SECRET, tenant_id=TENANT)


def lifecycle(event: str = "reauthorizationRequired", **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = published("lifecycle-reauthorization-required")["value"][0]
    item.update({"subscriptionExpirationDateTime": "2026-01-20T00:00:00Z", "lifecycleEvent": event}, **overrides)
    return item


def cloud_event(user: str = USER, event_type: str = "Microsoft.Graph.UserUpdated", **data: Any) -> dict[str, Any]:
    event: dict[str, Any] = published("eventgrid-user-updated", user)
    event.update(id="evt-1", type=event_type)
    event["data"].update(data)
    return event


def ticket(**fields: Any) -> bytes:
    data: dict[str, Any] = {"eventId": "evt-0001", "action": "upn_changed", "userId": USER}
    data.update(fields)
    return json.dumps(data).encode()


def verify(body: bytes, headers: dict[str, str] | None = None, *, now: datetime = NOW) -> TicketEvent:
    headers = sign_ticket(body, TICKET_SECRET, NOW) if headers is None else headers
    return verify_ticket(body, headers, secret=TICKET_SECRET, now=now)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
# Items shaped like notifications, with any field possibly replaced, so the parsers' inner paths are hit.
field_values = st.one_of(json_values, st.sampled_from([SECRET, TENANT, USER, f"Users/{USER}", "updated", SUB]))
loose_items = st.fixed_dictionaries({}, optional={
    key: field_values for key in ("clientState", "tenantId", "changeType", "resource", "subscriptionId",
                                  "lifecycleEvent", "subscriptionExpirationDateTime")
}).flatmap(lambda item: st.one_of(
    st.just(item),
    st.dictionaries(st.sampled_from(["id", "organizationId", "@odata.id", "sequenceNumber"]), field_values,
                    max_size=4).map(lambda rd: {**item, "resourceData": rd}),
))
fast = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_names_a_field(error: InputError | AuthError) -> None:
    assert FIELD_MESSAGE.match(error.message), error.message
