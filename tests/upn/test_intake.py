"""Intake parsers: Graph notifications, the handshake, lifecycle, Event Grid and the ticket webhook."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import AuthError, ConfigError, InputError, PayloadTooLarge
from shared.upn import intake
from shared.upn.intake import (
    MAX_BODY_BYTES,
    MAX_TICKET_BYTES,
    MAX_VALIDATION_TOKEN_CHARS,
    ChangeNotice,
    LifecycleEvent,
    event_grid_trigger_values,
    parse_change_notifications,
    parse_event_grid_batch,
    parse_event_grid_events,
    parse_event_grid_trigger,
    parse_lifecycle_notifications,
    sign_ticket,
    validation_token,
    verify_ticket,
)
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


def verify(body: bytes, headers: dict[str, str] | None = None, *, now: datetime = NOW) -> intake.TicketEvent:
    headers = sign_ticket(body, TICKET_SECRET, NOW) if headers is None else headers
    return verify_ticket(body, headers, secret=TICKET_SECRET, now=now)


# --- change notifications ------------------------------------------------------------------------


def test_valid_notification_becomes_a_change_notice() -> None:
    """A well-formed, authentic item yields a ChangeNotice with every field filled."""
    batch = parse(notification())
    assert batch.accepted == (ChangeNotice(user_id=USER, change_type="updated", subscription_id=SUB,
                                           tenant_id=TENANT, resource=f"Users/{USER}", source="notification"),)
    assert batch.rejected == () and batch.duplicates == 0


def test_user_id_is_lower_cased() -> None:
    """Upper-case GUIDs from Graph are normalised so the same user is one key everywhere."""
    batch = parse(notification(USER.upper()))
    assert batch.accepted[0].user_id == USER


def test_user_id_from_resource_when_resource_data_lacks_it() -> None:
    """With no resourceData, the id comes from the Users/<id> resource."""
    item = notification()
    del item["resourceData"]
    assert parse(item).accepted[0].user_id == USER


def test_user_id_from_resource_data_when_resource_is_absent() -> None:
    """With no resource, the id comes from resourceData.id and the resource is synthesised."""
    item = notification()
    del item["resource"]
    notice = parse(item).accepted[0]
    assert notice.user_id == USER and notice.resource == f"Users/{USER}"


def test_quoted_users_path_is_understood() -> None:
    """The users('<id>') spelling of the resource names the same user."""
    batch = parse(notification(resource=f"users('{USER}')"))
    assert batch.accepted[0].user_id == USER


def test_disagreeing_ids_are_rejected() -> None:
    """resourceData.id and the resource must name the same user."""
    batch = parse(notification(), notification(resource=f"Users/{USER2}"))
    assert [r.index for r in batch.rejected] == [1]
    assert batch.rejected[0].kind == "invalid"
    assert batch.rejected[0].reason == "value[1].resource: does not match value[1].resourceData.id"


def test_non_guid_user_id_is_rejected_naming_the_field() -> None:
    """A user id that is not an Entra object id is refused, and the reason names the field."""
    bad = notification(resource=None)
    bad["resourceData"] = {"id": "not-a-guid", "organizationId": TENANT}
    batch = parse(notification(), bad)
    assert batch.rejected[0].reason == "value[1].resourceData.id: user id is not a GUID"


def test_missing_user_id_alone_is_an_input_error_naming_the_field() -> None:
    """An authentic item with no user id anywhere, alone in the POST, is a 400 naming resourceData.id."""
    item = notification()
    del item["resource"]
    item["resourceData"] = {"organizationId": TENANT}
    with pytest.raises(InputError, match=re.escape("value[0].resourceData.id: missing")):
        parse(item)


def test_client_state_mismatch_is_dropped_and_others_kept() -> None:
    """A wrong clientState drops that item only; the reason never contains either secret."""
    batch = parse(notification(clientState="wrong-secret"), notification(USER2))
    assert [n.user_id for n in batch.accepted] == [USER2]
    assert batch.rejected[0].kind == "auth"
    assert batch.rejected[0].reason == "value[0].clientState: does not match"
    assert SECRET not in repr(batch) and "wrong-secret" not in repr(batch)


def test_missing_client_state_is_rejected() -> None:
    """An item without clientState is not ours."""
    item = notification()
    del item["clientState"]
    batch = parse(item, notification(USER2))
    assert batch.rejected[0].reason == "value[0].clientState: missing"


def test_non_ascii_client_state_does_not_crash() -> None:
    """compare_digest refuses non-ASCII str; non-ASCII and lone-surrogate states are simply mismatches."""
    raw = b'{"value": [' + json.dumps(notification(clientState="caf\u00e9")).encode() + b", " + \
        json.dumps(notification(USER2)).encode().replace(SECRET.encode(), b"\\ud800") + b"]}"
    with pytest.raises(AuthError):
        parse_change_notifications(raw, client_state=SECRET, tenant_id=TENANT)


def test_non_ascii_configured_secret_matches() -> None:
    """A configured clientState with non-ASCII characters still authenticates its own items."""
    secret = "s\u00e9cr\u00e9t"
    raw = body_of(notification(clientState=secret))
    assert parse_change_notifications(raw, client_state=secret, tenant_id=TENANT).accepted


def test_client_state_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every item's clientState goes through hmac.compare_digest."""
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(intake.hmac, "compare_digest", spy)
    parse(notification(), notification(USER2, clientState="nope"))
    assert len(calls) == 2


def test_tenant_mismatch_in_tenant_id_is_rejected() -> None:
    """An item from another tenant is dropped as an auth failure."""
    batch = parse(notification(tenantId=OTHER_TENANT), notification(USER2))
    assert batch.rejected[0].kind == "auth"
    assert batch.rejected[0].reason == "value[0].tenantId: not this tenant"


def test_tenant_mismatch_in_organization_id_is_rejected() -> None:
    """resourceData.organizationId must be ours as well when present."""
    item = notification()
    item["resourceData"]["organizationId"] = OTHER_TENANT
    batch = parse(item, notification(USER2))
    assert batch.rejected[0].reason == "value[0].resourceData.organizationId: not this tenant"


def test_tenant_from_organization_id_alone_is_enough() -> None:
    """Without tenantId, resourceData.organizationId identifies the tenant."""
    item = notification()
    del item["tenantId"]
    assert parse(item).accepted


def test_item_naming_no_tenant_is_rejected() -> None:
    """An item that names no tenant cannot be attributed, so it is not accepted."""
    item = notification()
    del item["tenantId"]
    del item["resourceData"]["organizationId"]
    batch = parse(item, notification(USER2))
    assert batch.rejected[0].reason == "value[0].tenantId: missing"


def test_tenant_compare_ignores_case() -> None:
    """GUID case does not matter for the tenant."""
    batch = parse_change_notifications(body_of(notification(tenantId=TENANT.upper())), client_state=SECRET,
                                       tenant_id=TENANT.upper())
    assert batch.accepted[0].tenant_id == TENANT


def test_all_items_unauthentic_is_an_auth_error() -> None:
    """A POST in which nothing passes clientState/tenant is a 401."""
    with pytest.raises(AuthError):
        parse(notification(clientState="x"), notification(USER2, tenantId=OTHER_TENANT))


def test_empty_value_list_is_an_empty_batch() -> None:
    """{"value": []} is valid and yields nothing."""
    assert parse() == intake.NotificationBatch()


def test_unsupported_change_type_is_rejected() -> None:
    """Only created/updated/deleted are user change types."""
    batch = parse(notification(changeType="updated,deleted"), notification(USER2))
    assert batch.rejected[0].reason.startswith("value[0].changeType: expected one of")


def test_deleted_change_type_is_kept() -> None:
    """A permanent deletion arrives as changeType deleted."""
    assert parse(notification(changeType="deleted")).accepted[0].change_type == "deleted"


def test_duplicates_within_a_batch_are_dropped() -> None:
    """The same user and change type twice in a POST is one notice; a different change type is not a duplicate."""
    batch = parse(notification(), notification(), notification(changeType="deleted"), notification(USER2))
    assert [(n.user_id, n.change_type) for n in batch.accepted] == [
        (USER, "updated"), (USER, "deleted"), (USER2, "updated")]
    assert batch.duplicates == 1
    assert batch.user_ids == [USER, USER2]


def test_non_object_item_is_rejected() -> None:
    """An item that is not a JSON object is refused by index."""
    batch = parse(notification(), 42)
    assert batch.rejected[0].reason == "value[1]: expected an object"


def test_resource_data_not_an_object_is_rejected() -> None:
    """resourceData must be an object when present."""
    batch = parse(notification(resourceData="x"), notification(USER2))
    assert batch.rejected[0].reason == "value[0].resourceData: expected an object"


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "body: empty"),
    (b"{not json", "body: not valid JSON"),
    (b"\xff\xfe", "body: not UTF-8"),
    (b"[]", "body: expected a JSON object"),
    (b"{}", "value: missing"),
    (b'{"value": {}}', "value: expected a list"),
    (b'{"value": [NaN]}', "body: not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "body: JSON nested too deeply"),
])
def test_malformed_envelope_is_an_input_error(raw: bytes, message: str) -> None:
    """Envelope problems are a 400 with a message naming what is wrong."""
    with pytest.raises(InputError) as caught:
        parse_change_notifications(raw, client_state=SECRET, tenant_id=TENANT)
    assert caught.value.message == message
    assert type(caught.value) is InputError


def test_body_over_the_limit_is_payload_too_large() -> None:
    """More than MAX_BODY_BYTES is a 413, before any parsing."""
    with pytest.raises(PayloadTooLarge):
        parse_change_notifications(b" " * (MAX_BODY_BYTES + 1), client_state=SECRET, tenant_id=TENANT)


def test_body_exactly_at_the_limit_is_read() -> None:
    """A body of exactly MAX_BODY_BYTES is still parsed."""
    raw = body_of(notification())
    raw = raw + b" " * (MAX_BODY_BYTES - len(raw))
    assert len(raw) == MAX_BODY_BYTES
    assert parse_change_notifications(raw, client_state=SECRET, tenant_id=TENANT).accepted


def test_empty_configured_client_state_is_a_config_error() -> None:
    """An empty secret would accept empty clientStates, so it is refused outright."""
    with pytest.raises(ConfigError):
        parse_change_notifications(body_of(notification(clientState="")), client_state="", tenant_id=TENANT)


# --- validation handshake ------------------------------------------------------------------------


def test_validation_token_absent_is_none() -> None:
    """A request without validationToken is not a handshake."""
    assert validation_token({}) is None
    assert validation_token({"other": "x"}) is None


def test_validation_token_is_returned_as_given() -> None:
    """The decoded token is echoed unchanged."""
    token = "Validation: Testing client application reachability for subscription Request-Id: 1"
    assert validation_token({"validationToken": token}) == token


def test_validation_token_length_is_bounded() -> None:
    """A token at the limit is accepted; one character more is a 400 naming validationToken."""
    assert validation_token({"validationToken": "a" * MAX_VALIDATION_TOKEN_CHARS})
    with pytest.raises(InputError, match=r"^validationToken: longer than"):
        validation_token({"validationToken": "a" * (MAX_VALIDATION_TOKEN_CHARS + 1)})


@pytest.mark.parametrize("token", ["", "abc\r\nSet-Cookie: x", "a\x00b"])
def test_validation_token_empty_or_with_control_characters_is_refused(token: str) -> None:
    """Empty tokens and tokens carrying control characters are never echoed."""
    with pytest.raises(InputError, match=r"^validationToken: "):
        validation_token({"validationToken": token})


# --- lifecycle ------------------------------------------------------------------------------------


def parse_lifecycle(*items: Any) -> list[LifecycleEvent]:
    return parse_lifecycle_notifications(body_of(*items), client_state=SECRET, tenant_id=TENANT)


@pytest.mark.parametrize("event", ["reauthorizationRequired", "subscriptionRemoved", "missed"])
def test_known_lifecycle_events(event: str) -> None:
    """The three documented lifecycle events are recognised by name."""
    [parsed] = parse_lifecycle(lifecycle(event))
    assert parsed == LifecycleEvent(event=event, subscription_id=SUB, tenant_id=TENANT,
                                    expiration=datetime(2026, 1, 20, tzinfo=UTC), raw_event=event)


def test_unknown_lifecycle_event_is_kept_as_unknown() -> None:
    """A new Graph event is reported as unknown with its name, not a crash."""
    [parsed] = parse_lifecycle(lifecycle("somethingNew"))
    assert parsed.event == "unknown" and parsed.raw_event == "somethingNew"


def test_lifecycle_expiration_with_seven_fraction_digits() -> None:
    """Graph's 7-digit fractions parse to an aware UTC datetime."""
    [parsed] = parse_lifecycle(lifecycle(subscriptionExpirationDateTime="2026-01-20T01:02:03.1234567Z"))
    assert parsed.expiration == datetime(2026, 1, 20, 1, 2, 3, 123456, tzinfo=UTC)


def test_lifecycle_bad_expiration_is_rejected() -> None:
    """An unparseable expiry is refused naming the field."""
    with pytest.raises(InputError, match=re.escape("value[0].subscriptionExpirationDateTime: not an ISO")):
        parse_lifecycle(lifecycle(subscriptionExpirationDateTime="soon"))


def test_lifecycle_missing_event_or_subscription_is_rejected() -> None:
    """lifecycleEvent and subscriptionId are required; the reasons name them."""
    no_event = lifecycle()
    del no_event["lifecycleEvent"]
    no_sub = lifecycle()
    del no_sub["subscriptionId"]
    with pytest.raises(InputError) as caught:
        parse_lifecycle(no_event, no_sub)
    assert caught.value.detail == ["value[0].lifecycleEvent: missing", "value[1].subscriptionId: missing"]


def test_lifecycle_client_state_and_tenant_are_checked() -> None:
    """Lifecycle items with a wrong clientState or tenant are dropped; all wrong is a 401."""
    events = parse_lifecycle(lifecycle(clientState="bad"), lifecycle(tenantId=OTHER_TENANT),
                             lifecycle("missed"))
    assert [e.event for e in events] == ["missed"]
    with pytest.raises(AuthError):
        parse_lifecycle(lifecycle(clientState="bad"))


def test_lifecycle_duplicates_are_returned_once() -> None:
    """The same event for the same subscription twice is one event."""
    assert len(parse_lifecycle(lifecycle(), lifecycle())) == 1


# --- Event Grid -----------------------------------------------------------------------------------


def test_event_grid_user_updated_becomes_a_notice() -> None:
    """A CloudEvents UserUpdated yields a notice with its event id and sequence number."""
    [notice] = parse_event_grid_events([cloud_event()], tenant_id=TENANT, client_state=SECRET)
    assert notice == ChangeNotice(user_id=USER, change_type="updated", subscription_id=SUB, tenant_id=TENANT,
                                  resource=f"Users/{USER}", source="eventgrid", event_id="evt-1",
                                  sequence_number=638400000000000000)


def test_event_grid_single_event_dict_is_accepted() -> None:
    """A single event (not a list) is parsed the same way."""
    [notice] = parse_event_grid_events(cloud_event(event_type="Microsoft.Graph.UserDeleted"), tenant_id=TENANT)
    assert notice.change_type == "deleted"


def test_event_grid_reauthorization_is_a_lifecycle_event() -> None:
    """SubscriptionReauthorizationRequired is not a user notice but a lifecycle event."""
    event = cloud_event(event_type="Microsoft.Graph.SubscriptionReauthorizationRequired")
    batch = parse_event_grid_batch([event], tenant_id=TENANT)
    assert batch.notices == ()
    assert [(e.event, e.subscription_id, e.source) for e in batch.lifecycle] == [
        ("reauthorizationRequired", SUB, "eventgrid")]
    assert parse_event_grid_events([event], tenant_id=TENANT) == []


def test_event_grid_other_types_are_ignored_without_error() -> None:
    """An event type that is not a Graph user event is ignored, not an error."""
    batch = parse_event_grid_batch([cloud_event(event_type="Microsoft.Graph.GroupUpdated")], tenant_id=TENANT)
    assert batch.notices == () and batch.rejected[0].kind == "ignored"


def test_event_grid_client_state_checked_only_when_configured() -> None:
    """data.clientState is verified when a client state is given and ignored otherwise."""
    event = cloud_event(clientState="other")
    assert parse_event_grid_events([event], tenant_id=TENANT)
    with pytest.raises(AuthError):
        parse_event_grid_events([event], tenant_id=TENANT, client_state=SECRET)


def test_event_grid_tenant_is_always_checked() -> None:
    """Events from another tenant are refused even without a client state."""
    event = cloud_event(tenantId=OTHER_TENANT)
    with pytest.raises(AuthError, match=re.escape("events[0].data.tenantId: not this tenant")):
        parse_event_grid_events([event], tenant_id=TENANT)


def test_event_grid_source_tenant_must_match() -> None:
    """A /tenants/<id> source naming another tenant is refused."""
    event = cloud_event()
    event["source"] = f"/tenants/{OTHER_TENANT}/applications/app-id"
    with pytest.raises(AuthError):
        parse_event_grid_events(event, tenant_id=TENANT)


def test_event_grid_subject_must_agree_with_resource_data() -> None:
    """subject and data.resourceData.id must name the same user."""
    event = cloud_event()
    event["subject"] = f"Users/{USER2}"
    with pytest.raises(InputError, match=re.escape("event.data.resourceData.id: does not match event.subject")):
        parse_event_grid_events(event, tenant_id=TENANT)


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
        parse_event_grid_events([event], tenant_id=TENANT)


def test_event_grid_sequence_number_as_digits_string() -> None:
    """A sequence number sent as a digit string is read as an integer; garbage is refused."""
    event = cloud_event()
    event["data"]["resourceData"]["sequenceNumber"] = "17"
    assert parse_event_grid_events(event, tenant_id=TENANT)[0].sequence_number == 17
    event["data"]["resourceData"]["sequenceNumber"] = True
    with pytest.raises(InputError, match="sequenceNumber"):
        parse_event_grid_events(event, tenant_id=TENANT)


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
        parse_event_grid_events("nope", tenant_id=TENANT)  # type: ignore[arg-type]


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
    assert notice == parse_event_grid_events(event, tenant_id=TENANT)[0]
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
        parse_event_grid_events(event, tenant_id=TENANT)


# --- ticket webhook -------------------------------------------------------------------------------


def test_signed_ticket_verifies_and_parses() -> None:
    """A correctly signed ticket yields every field, the user id lower-cased."""
    raw = ticket(userId=USER.upper(), userPrincipalName="a@contoso.com", oldUpn="a@old.com",
                 newUpn="a@contoso.com", ticketId="INC-42")
    event = verify(raw)
    assert event == intake.TicketEvent(event_id="evt-0001", action="upn_changed",
                                       timestamp=NOW, user_id=USER, user_principal_name="a@contoso.com",
                                       old_upn="a@old.com", new_upn="a@contoso.com", ticket_id="INC-42")


def test_signature_scheme_is_hmac_of_timestamp_dot_body() -> None:
    """The documented scheme: hex HMAC-SHA256 of f"{t}." + body, t in Unix seconds."""
    raw = ticket()
    t = str(int(NOW.timestamp()))
    digest = hmac.new(TICKET_SECRET.encode(), t.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert sign_ticket(raw, TICKET_SECRET, NOW) == {"X-Timestamp": t, "X-Signature": f"sha256={digest}"}
    assert verify(raw, {"x-timestamp": t, "x-signature": f"sha256={digest}"}).event_id == "evt-0001"


def test_header_names_are_case_insensitive() -> None:
    """Hosts may lower-case header names."""
    raw = ticket()
    headers = {k.upper(): v for k, v in sign_ticket(raw, TICKET_SECRET, NOW).items()}
    assert verify(raw, headers).action == "upn_changed"


def test_conflicting_duplicate_headers_are_refused() -> None:
    """Two spellings of a header with different values are ambiguous: 401."""
    raw = ticket()
    headers = sign_ticket(raw, TICKET_SECRET, NOW)
    headers["x-signature"] = "sha256=" + "0" * 64
    with pytest.raises(AuthError, match="X-Signature: sent more than once"):
        verify(raw, headers)


@pytest.mark.parametrize("skew", [timedelta(minutes=5), -timedelta(minutes=5), timedelta(0)])
def test_timestamp_inside_the_window_is_accepted(skew: timedelta) -> None:
    """Up to 5 minutes of clock difference either way is fine."""
    raw = ticket()
    assert verify(raw, sign_ticket(raw, TICKET_SECRET, NOW + skew)).event_id


@pytest.mark.parametrize("skew", [timedelta(minutes=5, seconds=1), -timedelta(minutes=5, seconds=1),
                                  timedelta(days=3650)])
def test_timestamp_outside_the_window_is_refused(skew: timedelta) -> None:
    """Old (replayed) and future-dated signatures are 401 even when correctly signed."""
    raw = ticket()
    with pytest.raises(AuthError, match="X-Timestamp: outside the allowed window"):
        verify(raw, sign_ticket(raw, TICKET_SECRET, NOW + skew))


def test_far_future_twelve_digit_timestamp_does_not_crash() -> None:
    """A timestamp past datetime's range is just outside the window."""
    raw = ticket()
    with pytest.raises(AuthError):
        verify(raw, sign_ticket(raw, TICKET_SECRET, 999_999_999_999))


def test_replay_with_a_fresh_timestamp_is_refused() -> None:
    """An old signature cannot be reused by swapping in a current timestamp: the signature covers it."""
    raw = ticket()
    old = sign_ticket(raw, TICKET_SECRET, NOW - timedelta(hours=1))
    headers = {"X-Timestamp": str(int(NOW.timestamp())), "X-Signature": old["X-Signature"]}
    with pytest.raises(AuthError, match="X-Signature: does not match"):
        verify(raw, headers)


@pytest.mark.parametrize(("headers", "message"), [
    ({}, "X-Timestamp: missing"),
    ({"X-Timestamp": "2026-01-01T12:00:00Z", "X-Signature": "sha256=" + "0" * 64},
     "X-Timestamp: expected whole Unix seconds"),
    ({"X-Timestamp": "1767268800"}, "X-Signature: missing"),
    ({"X-Timestamp": "1767268800", "X-Signature": "md5=abc"}, "X-Signature: expected sha256="),
    ({"X-Timestamp": "1767268800", "X-Signature": "sha256=" + "A" * 64}, "X-Signature: expected sha256="),
    ({"X-Timestamp": "1767268800", "X-Signature": "sha256=" + "0" * 64}, "X-Signature: does not match"),
])
def test_bad_auth_headers_are_401(headers: dict[str, str], message: str) -> None:
    """Missing or malformed signature headers are AuthErrors naming the header."""
    with pytest.raises(AuthError, match="^" + re.escape(message)):
        verify(ticket(), headers)


def test_wrong_secret_is_refused() -> None:
    """A body signed with another secret is 401."""
    raw = ticket()
    with pytest.raises(AuthError):
        verify(raw, sign_ticket(raw, "other-secret", NOW))


def test_bad_signature_is_401_even_for_a_malformed_body() -> None:
    """The signature is checked before the body is parsed."""
    with pytest.raises(AuthError):
        verify(b"{not json", {"X-Timestamp": "1767268800", "X-Signature": "sha256=" + "0" * 64})


def test_oversized_ticket_is_413() -> None:
    """More than MAX_TICKET_BYTES is refused before hashing."""
    raw = b" " * (MAX_TICKET_BYTES + 1)
    with pytest.raises(PayloadTooLarge):
        verify(raw)


@pytest.mark.parametrize(("raw", "message"), [
    (b"{not json", "body: not valid JSON"),
    (b"[1]", "body: expected a JSON object"),
    (ticket(eventId=None), "eventId: missing"),
    (ticket(eventId=5), "eventId: expected a string"),
    (ticket(eventId="x" * 129), "eventId: longer than 128 characters"),
    (ticket(eventId="a/b"), "eventId: only letters"),
    (ticket(action=None), "action: missing"),
    (ticket(action="delete_user"), "action: expected one of"),
    (ticket(userId="nope"), "userId: expected a GUID"),
    (ticket(userId=None), "userId: required for action upn_changed"),
    (ticket(action="recheck_user", userId=None), "userId: required for action recheck_user"),
    (ticket(userPrincipalName="no-at-sign"), "userPrincipalName: expected a user principal name"),
    (ticket(newUpn="a b@c.com"), "newUpn: expected a user principal name"),
    (ticket(oldUpn="a@" + "b" * 300), "oldUpn: longer than"),
    (ticket(ticketId="x" * 129), "ticketId: longer than 128 characters"),
    (ticket(ticketId="a\nb"), "ticketId: contains control characters"),
])
def test_ticket_body_errors_name_the_field(raw: bytes, message: str) -> None:
    """A correctly signed but invalid body is a 400 naming the field."""
    with pytest.raises(InputError) as caught:
        verify(raw)
    assert caught.value.message.startswith(message)


def test_ticket_user_by_upn_and_policy_action_without_user() -> None:
    """userPrincipalName alone identifies the user; verify_policy needs no user."""
    assert verify(ticket(userId=None, userPrincipalName="a@contoso.com")).user_principal_name == "a@contoso.com"
    assert verify(ticket(action="verify_policy", userId=None)).user_id is None


def test_ticket_needs_a_secret_and_an_aware_clock() -> None:
    """An empty secret is a configuration error; a naive `now` is a programming error."""
    raw = ticket()
    with pytest.raises(ConfigError):
        verify_ticket(raw, sign_ticket(raw, TICKET_SECRET, NOW), secret="", now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_ticket(raw, sign_ticket(raw, TICKET_SECRET, NOW), secret=TICKET_SECRET, now=NOW.replace(tzinfo=None))


# --- properties -----------------------------------------------------------------------------------

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


@fast
@given(st.binary(max_size=400))
def test_parsers_never_crash_on_arbitrary_bytes(raw: bytes) -> None:
    """Arbitrary bytes give a result or one of our errors, and every error names what is wrong."""
    for parser in (parse_change_notifications, parse_lifecycle_notifications):
        try:
            parser(raw, client_state=SECRET, tenant_id=TENANT)
        except ESCAPING as error:
            assert_names_a_field(error)


@fast
@given(json_values | st.lists(loose_items, max_size=5).map(lambda items: {"value": items}))
def test_parsers_never_crash_on_arbitrary_json(document: Any) -> None:
    """Arbitrary JSON (and notification-shaped junk) gives a result or an error naming a field."""
    raw = json.dumps(document).encode()
    for parser in (parse_change_notifications, parse_lifecycle_notifications):
        try:
            parser(raw, client_state=SECRET, tenant_id=TENANT)
        except ESCAPING as error:
            assert_names_a_field(error)


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


@fast
@given(raw=st.binary(max_size=300), headers=st.dictionaries(
    st.sampled_from(["X-Signature", "x-signature", "X-Timestamp", "x-timestamp", "Other"]),
    st.text(max_size=80) | st.just("sha256=" + "0" * 64) | st.just("1767268800"), max_size=4))
def test_verify_ticket_never_crashes(raw: bytes, headers: dict[str, str]) -> None:
    """Arbitrary bodies and headers raise only our errors, each naming a header or field."""
    try:
        verify(raw, headers)
    except ESCAPING as error:
        assert_names_a_field(error)


@fast
@given(json_values)
def test_signed_arbitrary_json_only_raises_input_errors(document: Any) -> None:
    """With a valid signature, any JSON body is parsed or refused with an InputError naming a field."""
    raw = json.dumps(document).encode()
    try:
        verify(raw)
    except InputError as error:
        assert_names_a_field(error)


@fast
@given(st.lists(st.tuples(st.booleans(), st.text(max_size=20)), min_size=1, max_size=8))
def test_client_state_mismatch_is_never_accepted(specs: list[tuple[bool, str]]) -> None:
    """Only items carrying exactly our clientState are accepted, whatever else the POST holds."""
    items, good = [], set()
    for index, (authentic, wrong) in enumerate(specs):
        user = f"{index:08x}-0000-0000-0000-000000000000"
        state = SECRET if authentic or wrong == SECRET else wrong
        items.append(notification(user, clientState=state))
        if state == SECRET:
            good.add(user)
    try:
        batch = parse(*items)
    except AuthError:
        assert not good
        return
    assert {n.user_id for n in batch.accepted} == good
    assert all(r.kind == "auth" for r in batch.rejected)


@fast
@given(part=st.sampled_from(["body", "signature", "timestamp"]), position=st.integers(min_value=0),
       mask=st.sampled_from([1 << bit for bit in range(8)]) | st.integers(min_value=1, max_value=255),
       fields=st.dictionaries(st.sampled_from(["ticketId", "userPrincipalName"]), st.just("a@contoso.com"),
                              max_size=2))
def test_any_flipped_byte_breaks_the_signature(part: str, position: int, mask: int, fields: dict[str, str]) -> None:
    """Flipping any one byte of the body, the signature or the timestamp of a valid call is a 401."""
    raw = ticket(**fields)
    headers = sign_ticket(raw, TICKET_SECRET, NOW)
    verify(raw, headers)  # the untouched call is valid

    def flip(data: bytes) -> bytes:
        index = position % len(data)
        return data[:index] + bytes([data[index] ^ mask]) + data[index + 1:]

    if part == "body":
        raw = flip(raw)
    else:
        name = "X-Signature" if part == "signature" else "X-Timestamp"
        headers = {**headers, name: flip(headers[name].encode("latin-1")).decode("latin-1")}
    with pytest.raises(AuthError):
        verify(raw, headers)


def test_every_flipped_header_byte_breaks_the_signature() -> None:
    """Exhaustively: every byte of X-Signature and X-Timestamp, XOR-ed with every non-zero mask, is a 401."""
    raw = ticket()
    headers = sign_ticket(raw, TICKET_SECRET, NOW)
    accepted = []
    for name in ("X-Signature", "X-Timestamp"):
        value = headers[name].encode("latin-1")
        for index in range(len(value)):
            for mask in range(1, 256):
                flipped = value[:index] + bytes([value[index] ^ mask]) + value[index + 1:]
                try:
                    verify(raw, {**headers, name: flipped.decode("latin-1")})
                except AuthError:
                    continue
                accepted.append((name, index, mask))
    assert accepted == []
