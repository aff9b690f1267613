"""The ticket webhook (shared/upn/ticket_webhook.py): signature, time window and the body's fields."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import AuthError, ConfigError, InputError, PayloadTooLarge
from shared.upn.ticket_webhook import TicketEvent, sign_ticket, verify_ticket
from shared.web import MAX_TICKET_BYTES
from tests.upn.intake_samples import (
    ESCAPING,
    NOW,
    TICKET_SECRET,
    USER,
    assert_names_a_field,
    fast,
    json_values,
    ticket,
    verify,
)

# --- ticket webhook -------------------------------------------------------------------------------


def test_signed_ticket_verifies_and_parses() -> None:
    """A correctly signed ticket yields every field, the user id lower-cased."""
    raw = ticket(userId=USER.upper(), userPrincipalName="a@contoso.com", oldUpn="a@old.com",
                 newUpn="a@contoso.com", ticketId="INC-42")
    event = verify(raw)
    assert event == TicketEvent(event_id="evt-0001", action="upn_changed",
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


# --- properties ------------------------------------------------------------------------------------


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
