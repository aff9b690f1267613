"""Graph's webhooks (shared/upn/graph_notifications.py): change notifications, the handshake, lifecycle."""
from __future__ import annotations

import hmac
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import AuthError, ConfigError, InputError, PayloadTooLarge
from shared.upn import intake
from shared.upn.graph_notifications import (
    MAX_VALIDATION_TOKEN_CHARS,
    parse_change_notifications,
    parse_lifecycle_notifications,
    validation_token,
)
from shared.upn.intake import MAX_BODY_BYTES, ChangeNotice, LifecycleEvent
from tests.upn.intake_samples import (
    ESCAPING,
    OTHER_TENANT,
    SECRET,
    SUB,
    TENANT,
    USER,
    USER2,
    assert_names_a_field,
    body_of,
    fast,
    json_values,
    lifecycle,
    loose_items,
    notification,
    parse,
)

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


# --- properties ------------------------------------------------------------------------------------


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
