"""Bad input, two ways.

1. Hypothesis over the parsers the existing unit tests do not fuzz yet (the Event Grid trigger helper,
   the validation handshake, desired-state text, ticket-shaped signed bodies, queue messages, HTTP JSON
   bodies, page tokens): none crashes, and every error is one of ours with a message naming the field.
2. Through the served app: authenticated but malformed, oversized and hostile bodies (signed tickets,
   notifications with our clientState, plans, applies, query parameters); never a 5xx, every refusal is
   the error envelope, and a refused request changes no table and not the queue.

Regressions found here (fixed in shared/): Unicode digits and 5,000-digit `limit`s, deeply nested JSON
bodies, lone surrogates in page tokens, desired-state documents and ticket fields were 500s; a ticket
naming a user whose UPN holds `#` was a 502.
"""
from __future__ import annotations

import base64
import copy
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import AuthError, InputError, PasskeyGuardError, PayloadTooLarge
from shared.policy.document import parse_document
from shared.state.keys import decode_page_token, encode_page_token
from shared.state.tables import page_after
from shared.upn.event_grid_events import parse_event_grid_trigger
from shared.upn.graph_notifications import validation_token
from shared.upn.intake import MAX_BODY_BYTES, ChangeNotice, LifecycleEvent
from shared.upn.sweep import sweep
from shared.upn.ticket_webhook import sign_ticket, verify_ticket
from shared.web import MAX_TICKET_BYTES, read_json_object
from tests import payloads
from tests.conftest import CLIENT_STATE
from tests.conftest import TICKET_SECRET as TICKET
from tests.e2e.stack import running_stack, tenant, uid, user
from tests.reliability import invalid
from tests.reliability.helpers import Probe, policy_document
from tests.reliability.summary import record, soak_factor

TENANT = "11111111-2222-3333-4444-555555555555"
SECRET = "client-state-secret-42"
TICKET_SECRET = "ticket-shared-secret"
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
USER = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
OURS = (InputError, AuthError, PayloadTooLarge)
EXAMPLES = 120 * soak_factor()
FAST = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20) | st.sampled_from(["\ud800", "\udfff", "a\x00b", "x" * 300, USER, TENANT, SECRET]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15)


NOUNS = ("request body", "page token", "queue message", "desired-state document", "body", "query parameter")


def names_a_field(error: PasskeyGuardError) -> bool:
    """A clear error: `<field>: <problem>`, or a sentence about the input it names, or for a desired-state
    document a detail list of {field, problem}; never an exception's repr or a stack trace."""
    message = error.message
    if not message or "Traceback" in message or " object at 0x" in message or len(message) > 400:
        return False
    head, sep, rest = message.partition(": ")
    return bool(sep and head.strip() and rest.strip()) or message.startswith(NOUNS) or bool(error.detail)


class Tally:
    """Counts what a property test fed in, how much of it the oracle (tests/reliability/invalid.py) calls
    invalid, and how much of that was refused; hypothesis also generates valid inputs, which are not counted
    as bad (a valid one refused is counted apart)."""

    def __init__(self) -> None:
        self.tried = 0
        self.invalid = 0
        self.refused = 0        # invalid inputs refused
        self.valid_refused = 0
        self.unjudged = 0

    def judged(self, invalid: bool | None, refused: bool) -> None:
        self.tried += 1
        if invalid is None:
            self.unjudged += 1
        elif invalid:
            self.invalid += 1
            self.refused += refused
        else:
            self.valid_refused += refused

    def outcome(self, call: Any, invalid: bool | None) -> Any:
        try:
            result = call()
        except OURS as error:
            self.judged(invalid, True)
            assert names_a_field(error), error.message
            return error
        self.judged(invalid, False)
        return result


TALLIES: dict[str, Tally] = {}


def tally(name: str) -> Tally:
    TALLIES[name] = TALLIES.get(name) or Tally()
    return TALLIES[name]


@pytest.fixture(scope="module", autouse=True)
def _record_parser_figures() -> Any:
    """After the module's property tests, record how many bad inputs the parsers were fed."""
    yield
    parsers = {k: v for k, v in TALLIES.items() if not k.startswith("http:")}
    if parsers:
        record("parser_properties", area="fuzz", bad_inputs=sum(t.invalid for t in parsers.values()),
               rejected=sum(t.refused for t in parsers.values()),
               detail={k: {"tried": v.tried, "invalid": v.invalid, "invalidRefused": v.refused,
                           "validRefused": v.valid_refused, "unjudged": v.unjudged} for k, v in parsers.items()})


# ------------------------------------------------------------------------------------------ 1. parsers
event_types = st.sampled_from(["Microsoft.Graph.UserUpdated", "Microsoft.Graph.UserDeleted",
                               "Microsoft.Graph.SubscriptionReauthorizationRequired", "Microsoft.Graph.GroupUpdated",
                               "microsoft.graph.userupdated", ""]) | st.text(max_size=30)
grid_data = st.fixed_dictionaries({}, optional={
    "tenantId": st.sampled_from([TENANT, TENANT.upper(), "other"]) | json_values,
    "clientState": st.sampled_from([SECRET, "wrong"]) | json_values,
    "resource": st.sampled_from([f"Users/{USER}", f"users('{USER}')", "Users/x"]) | json_values,
    "subscriptionId": st.text(max_size=10) | json_values,
    "subscriptionExpirationDateTime": st.sampled_from(["2026-01-01T00:00:00Z", "yesterday"]) | json_values,
    "resourceData": st.fixed_dictionaries({}, optional={
        "id": st.sampled_from([USER, USER.upper(), "nope"]) | json_values,
        "organizationId": st.sampled_from([TENANT, "other"]) | json_values,
        "sequenceNumber": st.sampled_from(["12", "-1", "9" * 40]) | json_values}) | json_values,
})


@FAST
@given(event_id=st.text(max_size=20), subject=st.none() | st.sampled_from([f"Users/{USER}", "Users/x"]) | st.text(
    max_size=20), event_type=event_types, data=st.none() | grid_data | json_values,
       client_state=st.none() | st.just(SECRET))
def test_the_event_grid_trigger_helper_never_crashes(event_id: str, subject: str | None, event_type: str,
                                                     data: Any, client_state: str | None) -> None:
    """Whatever func.EventGridEvent hands over, the trigger helper returns a notice, a lifecycle event or
    None, or raises our error naming the field."""
    result = tally("eventGridTrigger").outcome(lambda: parse_event_grid_trigger(
        event_id=event_id, subject=subject, event_type=event_type, data=data, tenant_id=TENANT,
        client_state=client_state), invalid.event_grid(event_type, data, client_state=client_state, tenant_id=TENANT))
    assert result is None or isinstance(result, (ChangeNotice, LifecycleEvent, *OURS))
    if isinstance(result, ChangeNotice):
        assert result.tenant_id == TENANT.lower() and len(result.user_id) == 36


@FAST
@given(st.dictionaries(st.sampled_from(["validationToken", "validationtoken", "other"]),
                       st.text(max_size=40) | st.sampled_from(["", "a\nb", "x" * 3000, "Validation: a+b/c=="]),
                       max_size=3))
def test_the_validation_handshake_never_crashes(params: dict[str, str]) -> None:
    """Any query gives the token back unchanged, None when it is not a handshake, or an InputError."""
    result = tally("validationToken").outcome(lambda: validation_token(params), invalid.validation_params(params))
    if isinstance(result, str):
        assert result == params["validationToken"] and len(result) <= 2048 and "\n" not in result


@FAST
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode)
       | json_values.map(lambda v: json.dumps(v).encode())
       | st.sampled_from([b"[" * 50_000, b'{"passkeyMethod": NaN}', b'"\\ud800"', b"\xef\xbb\xbf{}"]))
def test_desired_state_text_never_crashes(raw: bytes) -> None:
    """The desired-state file's text: a DesiredState, or an InputError listing {field, problem}."""
    result = tally("desiredStateText").outcome(lambda: parse_document(raw), invalid.desired_state_text(raw))
    if isinstance(result, InputError):
        assert isinstance(result.detail, list) and all(p["field"] and p["problem"] for p in result.detail)


ticket_fields = st.fixed_dictionaries(
    {"eventId": st.sampled_from(["evt-1", "", "bad id", "e" * 200, "\ud800"]) | json_values,
     "action": st.sampled_from(["upn_changed", "recheck_user", "verify_policy", "delete_everything"]) | json_values},
    optional={key: st.sampled_from([USER, USER.upper(), "o'brien@contoso.com", "jo#hn@contoso.com", "@", "a@b@c",
                                    "\ud800@x", "x" * 300, "a\tb@c", ""]) | json_values
              for key in ("userId", "userPrincipalName", "oldUpn", "newUpn", "ticketId")})


@FAST
@given(ticket_fields)
def test_signed_ticket_shaped_bodies_only_raise_input_errors(fields: dict[str, Any]) -> None:
    """Correctly signed ticket bodies with any field values: a TicketEvent whose text is all valid Unicode,
    or an InputError naming the field; never an AuthError, never a crash."""
    raw = json.dumps(fields).encode("utf-8", "surrogatepass")
    headers = sign_ticket(raw, TICKET_SECRET, NOW)
    result = tally("signedTicket").outcome(lambda: verify_ticket(raw, headers, secret=TICKET_SECRET, now=NOW),
                                           invalid.ticket_fields(fields))
    assert not isinstance(result, AuthError)
    if not isinstance(result, InputError):
        for value in (result.event_id, result.user_principal_name, result.old_upn, result.new_upn, result.ticket_id):
            if value is not None:
                value.encode("utf-8")


class _Untouchable:
    """Stands in for storage and Graph: a message that reaches them was accepted as well-formed."""

    class Reached(Exception):
        pass

    def __getattr__(self, name: str) -> Any:
        raise _Untouchable.Reached(name)


class _StubServices:
    def __init__(self) -> None:
        from shared.config import Settings

        self.settings = Settings.from_env({"TENANT_ID": TENANT, "STATE_STORAGE": "UseDevelopmentStorage=true"})
        self.graph = _Untouchable()
        self.store = _Untouchable()


kinds = st.sampled_from(["users", "lifecycle", "sweep", "other"]) | json_values
entries = st.lists(st.fixed_dictionaries({}, optional={"id": json_values, "upn": json_values}), max_size=3)
tenants = st.sampled_from([TENANT, "someone-else"]) | json_values
queue_bodies = (st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())
                | st.fixed_dictionaries({"kind": kinds, "tenant": tenants},
                                        optional={"users": json_values | entries, "event": json_values,
                                                  "source": json_values}).map(lambda v: json.dumps(v).encode()))


@FAST
@given(queue_bodies)
async def test_queue_messages_are_refused_clearly_before_any_io(body: bytes) -> None:
    """A queue message is dispatched, dropped (another tenant) or refused with an InputError; only a
    well-formed message reaches Graph or storage."""
    from shared.upn.dispatch import handle_message

    counter = tally("queueMessage")
    bad = invalid.queue_message(body, tenant_id=TENANT)
    try:
        await handle_message(_StubServices(), body)  # type: ignore[arg-type]
    except InputError as error:
        counter.judged(bad, True)
        assert names_a_field(error), error.message
    except _Untouchable.Reached:
        counter.judged(bad, False)
        message = json.loads(body)
        assert message["tenant"] == TENANT and message["kind"] in ("users", "lifecycle")
    else:
        counter.judged(bad, False)


@FAST
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())
       | st.sampled_from([b"[" * 100_000, b"{" * 3000, b'{"a": NaN}', b'{"a": -Infinity}', b"\x00", b" "]))
def test_http_json_bodies_never_crash(raw: bytes) -> None:
    """The admin routes' body parser: a dict, or an InputError (a 400), never a RecursionError or a 500."""
    result = tally("httpJsonBody").outcome(lambda: read_json_object(raw), invalid.json_object_body(raw))
    assert isinstance(result, dict | InputError)


def _read_page_token(token: str) -> dict[str, Any]:
    """What a listing does with a token before it reads: decode it, then take the last key it returned."""
    state = decode_page_token("flags", token)
    page_after(state)
    return state


@FAST
@given(st.text(max_size=60) | json_values.map(lambda v: base64.urlsafe_b64encode(
    json.dumps({"k": "flags", "after": v}).encode("utf-8", "surrogatepass")).decode().rstrip("=")))
def test_page_tokens_never_crash(token: str) -> None:
    """A page token is our own opaque state (with the last key it returned) or an InputError; a decoded token
    is always storable text."""
    result = tally("pageToken").outcome(lambda: _read_page_token(token), invalid.page_token("flags", token))
    if isinstance(result, dict):
        json.dumps(result, ensure_ascii=False).encode("utf-8")


# ------------------------------------------------------------------------------------------ 2. served app
def _notification(tenant_id: str, n: int, **overrides: Any) -> dict[str, Any]:
    """Microsoft's published change notification for user n, with `overrides` applied."""
    item: dict[str, Any] = payloads.load("notification-user-updated", tenant_id=tenant_id, user_id=uid(n),
                                         client_state=CLIENT_STATE)["value"][0]
    item.update(overrides)
    return item


HOSTILE = [None, True, 0, -1, 2**64, 1.5e308, "", " ", "\ud800", "a\x00b", "x" * 5000, [], {}, [[[[[]]]]],
           {"$ref": "#"}, "' or 1=1 --", "../../etc/passwd", "%00", "<script>", "Users/../groups/x",
           "users('x')/authentication", "00000000-0000-0000-0000-000000000000"]


class JudgedProbe(Probe):
    """A Probe that asks the oracle about each request it sends, so only invalid ones count as bad inputs."""

    async def post(self, path: str, body: bytes, **kwargs: Any) -> int:  # type: ignore[override]
        kwargs.setdefault("invalid", invalid.post(path, body, client_state=CLIENT_STATE,
                                                  tenant_id=self.stack.tenant_id))
        if path == "graph/notifications":
            kwargs.setdefault("invalid_items", invalid.notification_items(
                body, client_state=CLIENT_STATE, tenant_id=self.stack.tenant_id))
        return await super().post(path, body, **kwargs)

    async def get(self, path: str, params: dict[str, str], label: str = "", **kwargs: Any) -> int:  # type: ignore[override]
        kwargs.setdefault("invalid", invalid.query_invalid(path, params))
        return await super().get(path, params, label, **kwargs)


def _mutate(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """One structural mutation somewhere inside `value`: replace, drop or add a field, or change an item."""
    if isinstance(value, dict) and value and depth < 4 and rng.random() < 0.7:
        key = rng.choice(sorted(value))
        out = dict(value)
        roll = rng.random()
        if roll < 0.25:
            del out[key]
        elif roll < 0.35:
            out[rng.choice(["extra", "$schema", "__proto__", key.upper()])] = rng.choice(HOSTILE)
        else:
            out[key] = _mutate(value[key], rng, depth + 1)
        return out
    if isinstance(value, list) and value and depth < 4 and rng.random() < 0.7:
        out_list = list(value)
        i = rng.randrange(len(out_list))
        out_list[i] = _mutate(out_list[i], rng, depth + 1)
        return out_list
    return rng.choice(HOSTILE)


def _encode(value: Any, rng: random.Random) -> bytes:
    raw = json.dumps(value).encode("utf-8", "surrogatepass")
    roll = rng.random()
    if roll < 0.08:
        return raw[: rng.randrange(1, max(2, len(raw)))]  # truncated
    if roll < 0.12:
        return raw.replace(b"{", b"{\"dup\": 1, ", 1) + b" "  # duplicate-ish keys and trailing space
    return raw


async def test_hostile_requests_to_the_served_app_never_5xx_and_refusals_write_nothing(azurite):
    """Authenticated but malformed bodies (signed tickets, notifications and lifecycle events with our
    clientState, desired-state documents, applies) and hostile query parameters, mutated at random: no 5xx,
    every refusal is the error envelope, and no refused request changes a table or the queue."""
    rng = random.Random(20261125)
    cases = 60 * soak_factor()
    users = [user(1), user(2), user(3, key=None)]
    users.append({**user(4), "userPrincipalName": "jo#hn@contoso.example"})
    async with running_stack(azurite, tenant(users), drain=False, ENFORCEMENT_MODE="enforce",
                             ALLOW_ADHOC_DOCUMENTS="true") as stack:
        await sweep(stack.services)
        probe = JudgedProbe(stack, azurite.connection_string)
        await probe.start()
        tid = stack.tenant_id

        # Regressions first (each was a 500 or a 502 before).
        for params in ({"limit": "²"}, {"limit": "1" * 5000}, {"limit": "-1"}, {"limit": "٣"}, {"pageToken": "%%%"},
                       {"pageToken": encode_page_token("flags", {"after": "\ud800", "status": None})}):
            for path in ("flags", "runs"):
                assert await probe.get(path, params, label=f"GET {path} {str(params)[:30]}") == 400, params
        assert await probe.get("flags", {"status": "bogus"}, label="GET flags?status=bogus") == 400
        assert await probe.get("flags", {"pageToken": encode_page_token("runs", {"after": "x"})},
                               label="GET flags with a runs token") == 400
        for body in (b"[" * 100_000, b'{"document": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"a": NaN}'):
            for path in ("policy/verify", "policy/plan", "policy/apply"):
                assert await probe.post(path, body, label=f"POST {path} nested/NaN") == 400
        surrogate = policy_document()
        surrogate["aaguidNames"] = {"de1e552d-db1d-4423-a619-566b625cdc84": "\ud800"}
        raw = json.dumps({"document": surrogate}).encode("utf-8", "surrogatepass")
        assert await probe.post("policy/plan", raw, label="plan with a lone surrogate") == 400
        for fields in ({"userPrincipalName": "\ud800@x"}, {"userId": uid(1), "ticketId": "\ud800"}):
            raw = json.dumps({"eventId": f"s{len(fields)}", "action": "upn_changed", **fields}).encode(
                "utf-8", "surrogatepass")
            assert await probe.post("tickets", raw, headers=sign_ticket(raw, TICKET, int(time.time())),
                                    label="ticket with a lone surrogate") == 400
        stack.sim.control("POST", "users/bulk_rename", {"notify": False, "users": [
            {"id": uid(4), "userPrincipalName": "jo#hn@fabrikam.example"}]})
        await sweep(stack.services)
        raw = json.dumps({"eventId": "hash-upn", "action": "recheck_user",
                          "userPrincipalName": "jo#hn@fabrikam.example"}).encode()
        assert await probe.post("tickets", raw, headers=sign_ticket(raw, TICKET, int(time.time())),
                                label="ticket for a UPN with #") == 200

        # Then random mutations of valid requests.
        plan_status, plan_text, _ = await stack.post("policy/plan", json.dumps({"document": policy_document()}))
        plan_id = "none"
        if plan_status == 202:
            await stack.host.drain_once()
            plan_id = json.loads((await stack.get(f"runs/{json.loads(plan_text)['runId']}"))[1]).get("planId", "none")
        await probe.start()
        valid: list[tuple[str, Any]] = [
            ("tickets", {"eventId": "m", "action": "upn_changed", "userId": uid(1), "ticketId": "INC-1"}),
            ("graph/notifications", {"value": [_notification(tid, 1), _notification(tid, 2)]}),
            ("graph/lifecycle", payloads.load("lifecycle-reauthorization-required", tenant_id=tid,
                                              client_state=CLIENT_STATE)),
            ("policy/plan", {"document": policy_document()}),
            ("policy/apply", {"planId": plan_id, "acceptLockout": {"planId": plan_id, "users": 0}}),
            ("policy/verify", {}),
        ]
        for n in range(cases):
            path, good = valid[n % len(valid)]
            body = _encode(_mutate(copy.deepcopy(good), rng), rng)
            headers = None
            if path == "tickets":
                body = body.replace(b'"m"', f'"m{n}"'.encode(), 1)  # a fresh event id, when it survived
                headers = sign_ticket(body, TICKET, int(time.time()))
            await probe.post(path, body, headers=headers, label=f"mutated {path} #{n}")
        for n in range(cases // 3):
            params = {rng.choice(["limit", "status", "pageToken", "x"]): str(rng.choice(HOSTILE))[:3000]}
            await probe.get(rng.choice(["flags", "runs", "flags/export"]), params, label=f"query #{n}")

        record("http_hostile_requests", area="fuzz", bad_inputs=probe.invalid, rejected=probe.invalid_refused,
               data_lost=sum("wrote" in p for p in probe.problems),
               detail={"sent": probe.sent, "invalid": probe.invalid, "invalidRefused": probe.invalid_refused,
                       "validRefused": probe.valid_refused, "invalidAccepted": probe.invalid_accepted[:5],
                       "byStatus": dict(sorted(probe.statuses.items())),
                       "problems": probe.problems[:5]})
        assert not probe.problems, "\n".join(probe.problems[:10])
        assert probe.refused > cases // 2


async def test_oversized_bodies_get_413_and_write_nothing(azurite):
    """Every POST route refuses a body over its limit with 413 before reading it (tickets: 64 KiB, even
    when signed; the rest: 1 MiB) and nothing is written."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        probe = Probe(stack, azurite.connection_string)
        await probe.start()
        big = b'{"value": [], "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
        for path in ("policy/verify", "policy/plan", "policy/apply", "graph/notifications", "graph/lifecycle"):
            assert await probe.post(path, big, label=f"1 MiB+ to {path}", invalid=len(big) > MAX_BODY_BYTES) == 413
        ticket = b'{"eventId": "big", "action": "verify_policy", "pad": "' + b"x" * MAX_TICKET_BYTES + b'"}'
        over = len(ticket) > MAX_TICKET_BYTES
        assert await probe.post("tickets", ticket, headers=sign_ticket(ticket, TICKET, int(time.time())),
                                label="signed 64 KiB+ ticket", invalid=over) == 413
        assert await probe.post("tickets", ticket, label="unsigned 64 KiB+ ticket", invalid=over) == 413
        record("oversized_bodies", area="fuzz", bad_inputs=probe.invalid, rejected=probe.invalid_refused,
               data_lost=sum("wrote" in p for p in probe.problems), detail={"byStatus": dict(probe.statuses)})
        assert not probe.problems, probe.problems
        assert probe.statuses == Counter({413: 7})



async def test_a_ticket_for_a_upn_with_an_apostrophe_quotes_the_odata_key(azurite):
    """Entra allows ' in a UPN (O'Brien): the ticket's user lookup doubles it inside users('...'), as OData
    requires (the simulator also accepts it undoubled, so the URL sent is checked)."""
    obrien = {**user(1), "userPrincipalName": "o'brien@contoso.example"}
    async with running_stack(azurite, tenant([obrien]), drain=False) as stack:
        await sweep(stack.services)
        sent: list[str] = []
        original = stack.services.graph.get_json

        async def spy(url: str, **kwargs: Any) -> dict[str, Any]:
            sent.append(url)
            return await original(url, **kwargs)

        stack.services.graph.get_json = spy  # type: ignore[method-assign]
        raw = json.dumps({"eventId": "quote-1", "action": "recheck_user",
                          "userPrincipalName": "o'brien@contoso.example"}).encode()
        status, text, _ = await stack.post("tickets", raw, headers=sign_ticket(raw, TICKET, int(time.time())))
        assert status == 200, text
        assert json.loads(text)["userId"] == uid(1)
        assert any(u.startswith("/users('o''brien@contoso.example')") for u in sent), sent
