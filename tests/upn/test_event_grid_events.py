"""Graph partner events through Event Grid (shared/upn/event_grid_events.py), and the trigger helper."""
from __future__ import annotations

import re
from typing import Any

import azure.functions as func
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import AuthError, InputError
from shared.upn.event_grid_events import (
    event_grid_trigger_values,
    parse_event_grid_batch,
    parse_event_grid_trigger,
)
from shared.upn.intake import ChangeNotice, LifecycleEvent
from tests import payloads
from tests.upn.intake_samples import (
    ESCAPING,
    OTHER_TENANT,
    SECRET,
    SUB,
    TENANT,
    USER,
    USER2,
    assert_names_a_field,
    cloud_event,
    fast,
    json_values,
    loose_items,
)

# --- Event Grid -----------------------------------------------------------------------------------


def test_event_grid_user_updated_becomes_a_notice() -> None:
    """A CloudEvents UserUpdated yields a notice with its event id and sequence number."""
    [notice] = parse_event_grid_batch([cloud_event()], tenant_id=TENANT, client_state=SECRET).notices
    assert notice == ChangeNotice(user_id=USER, change_type="updated", subscription_id=SUB, tenant_id=TENANT,
                                  resource=f"Users/{USER}", source="eventgrid", event_id="evt-1",
                                  sequence_number=638400000000000000)


def test_event_grid_single_event_dict_is_accepted() -> None:
    """A single event (not a list) is parsed the same way."""
    deleted = cloud_event(event_type="Microsoft.Graph.UserDeleted")
    [notice] = parse_event_grid_batch(deleted, tenant_id=TENANT).notices
    assert notice.change_type == "deleted"


def test_event_grid_reauthorization_is_a_lifecycle_event() -> None:
    """SubscriptionReauthorizationRequired is not a user notice but a lifecycle event."""
    event = cloud_event(event_type="Microsoft.Graph.SubscriptionReauthorizationRequired")
    batch = parse_event_grid_batch([event], tenant_id=TENANT)
    assert batch.notices == ()
    assert [(e.event, e.subscription_id, e.source) for e in batch.lifecycle] == [
        ("reauthorizationRequired", SUB, "eventgrid")]


def test_event_grid_other_types_are_ignored_without_error() -> None:
    """An event type that is not a Graph user event is ignored, not an error."""
    batch = parse_event_grid_batch([cloud_event(event_type="Microsoft.Graph.GroupUpdated")], tenant_id=TENANT)
    assert batch.notices == () and batch.rejected[0].kind == "ignored"


def test_event_grid_client_state_checked_only_when_configured() -> None:
    """data.clientState is verified when a client state is given and ignored otherwise."""
    event = cloud_event(clientState="other")
    assert parse_event_grid_batch([event], tenant_id=TENANT).notices
    with pytest.raises(AuthError):
        parse_event_grid_batch([event], tenant_id=TENANT, client_state=SECRET)


def test_event_grid_tenant_is_always_checked() -> None:
    """Events from another tenant are refused even without a client state."""
    event = cloud_event(tenantId=OTHER_TENANT)
    with pytest.raises(AuthError, match=re.escape("events[0].data.tenantId: not this tenant")):
        parse_event_grid_batch([event], tenant_id=TENANT)


def test_event_grid_source_tenant_must_match() -> None:
    """A /tenants/<id> source naming another tenant is refused."""
    event = cloud_event()
    event["source"] = f"/tenants/{OTHER_TENANT}/applications/app-id"
    with pytest.raises(AuthError):
        parse_event_grid_batch(event, tenant_id=TENANT)


def test_event_grid_subject_must_agree_with_resource_data() -> None:
    """subject and data.resourceData.id must name the same user."""
    event = cloud_event()
    event["subject"] = f"Users/{USER2}"
    with pytest.raises(InputError, match=re.escape("event.data.resourceData.id: does not match event.subject")):
        parse_event_grid_batch(event, tenant_id=TENANT)


@pytest.mark.parametrize(("change", "message"), [
    ({"specversion": "0.3"}, "events[0].specversion: expected"),
    ({"id": ""}, "events[0].id: missing"),
    ({"data": None}, "events[0].data: expected an object"),
])
def test_event_grid_envelope_fields_are_required(change: dict[str, Any], message: str) -> None:
    """CloudEvents 1.0 fields are checked and the error names the field."""
    event = cloud_event()
    event.update(change)
    with pytest.raises(InputError, match="^" + re.escape(message)):
        parse_event_grid_batch([event], tenant_id=TENANT)


def test_event_grid_sequence_number_as_digits_string() -> None:
    """A sequence number sent as a digit string is read as an integer; garbage is refused."""
    event = cloud_event()
    event["data"]["resourceData"]["sequenceNumber"] = "17"
    assert parse_event_grid_batch(event, tenant_id=TENANT).notices[0].sequence_number == 17
    event["data"]["resourceData"]["sequenceNumber"] = True
    with pytest.raises(InputError, match="sequenceNumber"):
        parse_event_grid_batch(event, tenant_id=TENANT)


def test_event_grid_mixed_list_keeps_the_good_events() -> None:
    """One bad event in a delivery does not drop the others; duplicates are counted."""
    bad = cloud_event(USER2)
    bad["subject"] = "Users/nope"
    batch = parse_event_grid_batch([cloud_event(), bad, cloud_event()], tenant_id=TENANT)
    assert [n.user_id for n in batch.notices] == [USER]
    assert batch.rejected[0].reason == "events[1].subject: user id is not a GUID"
    assert batch.duplicates == 1


def test_event_grid_input_must_be_a_list_or_object() -> None:
    """Anything else is a 400."""
    with pytest.raises(InputError, match=r"^events: "):
        parse_event_grid_batch("nope", tenant_id=TENANT)  # type: ignore[arg-type]


def graph_event(name: str = "eventgrid-user-updated", **changes: Any) -> dict[str, Any]:
    """Microsoft's published Graph CloudEvent `name` for USER in TENANT, with top-level `changes`."""
    event: dict[str, Any] = payloads.load(name, tenant_id=TENANT, user_id=USER, client_state=SECRET,
                                          subscription_id=SUB)
    event.update(changes)
    return event


def trigger(event: dict[str, Any], **kwargs: Any) -> ChangeNotice | LifecycleEvent | None:
    """What upn_events does with one delivered event: the library decodes it, the helper parses it."""
    decoded = payloads.event_grid_event(event)
    return parse_event_grid_trigger(**event_grid_trigger_values(decoded), tenant_id=TENANT, **kwargs)


def test_trigger_helper_returns_a_notice() -> None:
    """The func.CloudEvent the library decodes gives the same notice as the CloudEvent itself."""
    event = graph_event()
    notice = trigger(event, client_state=SECRET)
    assert isinstance(payloads.event_grid_event(event), func.CloudEvent)
    assert notice == parse_event_grid_batch(event, tenant_id=TENANT).notices[0]
    assert notice == ChangeNotice(user_id=USER, change_type="updated", subscription_id=SUB, tenant_id=TENANT,
                                  resource=f"Users/{USER}", source="eventgrid", event_id=event["id"],
                                  sequence_number=638400000000000000)


def test_trigger_helper_reads_user_deleted() -> None:
    """Microsoft's UserDeleted CloudEvent is a `deleted` notice."""
    notice = trigger(graph_event("eventgrid-user-deleted"), client_state=SECRET)
    assert isinstance(notice, ChangeNotice) and notice.change_type == "deleted" and notice.user_id == USER


def test_trigger_helper_lifecycle_ignored_and_errors() -> None:
    """The trigger helper returns lifecycle events, None for ignored types, and raises for bad events."""
    reauth = trigger(graph_event("eventgrid-subscription-reauthorization-required"))
    assert isinstance(reauth, LifecycleEvent)
    assert trigger(graph_event(type="Some.Other")) is None
    with pytest.raises(InputError, match=re.escape("event.data: expected an object")):
        trigger(graph_event(data=None))


def test_trigger_helper_reads_an_event_grid_schema_event() -> None:
    """An Event Grid schema delivery (the library hands a func.EventGridEvent) gives the same notice."""
    cloud = graph_event()
    grid = {"id": cloud["id"], "topic": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventGrid/"
            "partnerTopics/graph", "subject": cloud["subject"], "eventType": cloud["type"],
            "eventTime": cloud["time"], "data": cloud["data"], "dataVersion": "1.0"}
    assert isinstance(payloads.event_grid_event(grid), func.EventGridEvent)
    assert trigger(grid, client_state=SECRET) == trigger(cloud, client_state=SECRET)


def test_trigger_helper_checks_the_tenant_in_source() -> None:
    """A CloudEvent whose source names another tenant, or no tenant, is refused though its data names ours."""
    other = f"/tenants/{OTHER_TENANT}/applications/{payloads.APPLICATION_ID}"
    with pytest.raises(AuthError, match=re.escape("event.source: not this tenant")):
        trigger(graph_event(source=other), client_state=SECRET)
    for source in (f"/tenants/{TENANT}", "/subscriptions/s/partnerTopics/graph"):
        with pytest.raises(AuthError, match=re.escape("event.source: expected /tenants/")):
            trigger(graph_event(source=source), client_state=SECRET)
    missing = graph_event()
    del missing["source"]
    with pytest.raises(AuthError, match=re.escape("event.source: expected /tenants/")):
        trigger(missing, client_state=SECRET)


def test_trigger_helper_needs_the_tenant_in_data_too() -> None:
    """The tenant in source does not stand in for data: data.tenantId or organizationId must name ours."""
    event = graph_event()
    del event["data"]["tenantId"], event["data"]["resourceData"]["organizationId"]
    with pytest.raises(AuthError, match=re.escape("event.data.tenantId: missing")):
        trigger(event, client_state=SECRET)
    with pytest.raises(AuthError, match=re.escape("event.data.tenantId: missing")):
        parse_event_grid_batch(event, tenant_id=TENANT)


# --- properties ------------------------------------------------------------------------------------


@fast
@given(st.one_of(json_values, st.lists(st.one_of(json_values, loose_items.map(
    lambda data: {"specversion": "1.0", "id": "e", "type": "Microsoft.Graph.UserUpdated",
                  "subject": data.get("resource"), "data": data})), max_size=4)))
def test_event_grid_parser_never_crashes(events: Any) -> None:
    """Arbitrary values handed to the Event Grid parser only raise our errors, naming a field."""
    try:
        parse_event_grid_batch(events, tenant_id=TENANT, client_state=SECRET)
    except ESCAPING as error:
        assert_names_a_field(error)
