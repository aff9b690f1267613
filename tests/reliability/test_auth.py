"""Authentication: admin routes need an Entra principal with an app role; a wrong HMAC, clientState or
tenant is refused and writes nothing; a replayed ticket does its work once; and during a full run no secret
or token (the dev bearer token, NOTIFICATION_CLIENT_STATE, TICKET_WEBHOOK_SECRET, the Azurite account key)
reaches any log record, at DEBUG, of any logger (ours, azure.*, httpx/httpcore, kiota, msgraph, aiohttp)."""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest

from devhost.azurite import ACCOUNT_KEY
from shared.errors import AuthError
from shared.principal import READER_ROLE, encode_principal
from shared.upn.subscriptions import ensure_subscription
from shared.upn.sweep import sweep
from shared.upn.ticket_webhook import sign_ticket
from tests import payloads
from tests.conftest import CLIENT_STATE, TICKET_SECRET
from tests.e2e.stack import running_stack, tenant, uid, user
from tests.reliability.helpers import Probe, policy_document, policy_tenant, raw_flags, snapshot_storage, storage_diff
from tests.reliability.summary import record
from tests.upn.stack_steps import rename

ADMIN_ROUTES = {"runs_list", "run_get", "policy_verify", "policy_plan", "policy_apply", "flags_list", "flags_export",
                "flags_approve_removal", "health_details"}
SELF_AUTHENTICATED = {"graph_notifications", "graph_lifecycle", "tickets"}


def _level(fn: Any) -> tuple[str, str] | None:
    """(route, auth level) of an HTTP function, None for other triggers."""
    trigger = next(b for b in fn.get_bindings_dict()["bindings"] if b["type"].endswith("Trigger"))
    if trigger["type"] != "httpTrigger":
        return None
    return trigger["route"], str(getattr(trigger["authLevel"], "value", trigger["authLevel"])).lower()


def test_every_route_is_anonymous_for_the_host(functions):
    """The Functions host checks no key on any route (the app default is ANONYMOUS): App Service
    Authentication validates the caller's Entra token and the code checks the app role, so a function key
    alone no longer opens an admin route (tests/functions/test_route_access.py checks the roles)."""
    import function_app

    levels = {name: lv for name, fn in functions.items() if (lv := _level(fn)) is not None}
    assert str(getattr(function_app.app.auth_level, "value", function_app.app.auth_level)).lower() == "anonymous"
    assert set(levels) == ADMIN_ROUTES | SELF_AUTHENTICATED | {"health"}
    assert {level for _, level in levels.values()} == {"anonymous"}


async def test_admin_routes_refuse_a_caller_without_the_role_and_write_nothing(azurite):
    """Through the served app: no principal is 401, a reader planning or applying is 403, and neither
    refusal writes a row or a message; the admin's plan then is queued."""
    async with running_stack(azurite, tenant([user(1)]), drain=False, ALLOW_ADHOC_DOCUMENTS="true") as stack:
        reader = encode_principal([READER_ROLE])
        probe = Probe(stack, azurite.connection_string)
        await probe.start()
        document = json.dumps({"document": policy_document()})
        assert await probe.post("policy/plan", document.encode(), principal=None, label="plan, anonymous") == 401
        assert await probe.post("policy/plan", document.encode(), principal=reader, label="plan, reader") == 403
        assert await probe.post("policy/apply", b'{"planId": "x"}', principal=reader, label="apply, reader") == 403
        assert await probe.get("flags", {}, principal=None, label="flags, anonymous") == 401
        assert await probe.get("flags", {}, principal=reader, label="flags, reader") == 200
        assert probe.problems == []
        status, _, _ = await stack.post("policy/plan", document)
        assert status == 202


async def test_anonymous_health_names_no_tenant_and_no_secret(azurite):
    """GET /api/health (anonymous) tells the status only: no tenant id, no secret, no versions or mode."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        status, text, _ = await stack.get("health", principal=None)
        assert "versions" not in text and "enforcementMode" not in text
        assert status == 200
        for secret in (stack.tenant_id, CLIENT_STATE, TICKET_SECRET, stack.services.settings.graph_dev_token,
                       ACCOUNT_KEY):
            assert secret not in text


def _note(stack: Any, n: int, **overrides: Any) -> dict[str, Any]:
    """A genuine change notification for user n of this stack, with `overrides` applied."""
    item: dict[str, Any] = payloads.load("notification-user-updated", tenant_id=stack.tenant_id, user_id=uid(n),
                                         client_state=CLIENT_STATE)["value"][0]
    item.update(overrides)
    return item


def _grid_event(stack: Any, n: int, event_id: str, data: dict[str, Any]) -> Any:
    """Microsoft's UserUpdated CloudEvent for user n carrying `data`, decoded as the host decodes it."""
    event = payloads.load("eventgrid-user-updated", tenant_id=stack.tenant_id, user_id=uid(n), client_state="")
    return payloads.event_grid_event({**event, "id": event_id, "data": data})


async def test_wrong_hmac_client_state_or_tenant_is_refused_and_writes_nothing(azurite, functions):
    """Forged, replayed, stale and other-tenant inputs on every self-authenticated surface are refused
    (401, or AuthError for Event Grid) and no table row or queue message appears; a valid ticket sent
    twice is done once."""
    async with running_stack(azurite, tenant([user(1), user(2)]), drain=False) as stack:
        await sweep(stack.services)
        stack.sim.control("POST", "users/bulk_rename", {"notify": False, "users": [
            {"id": uid(1), "userPrincipalName": "user1@fabrikam.example"}]})
        probe = Probe(stack, azurite.connection_string)
        await probe.start()
        other = str(uuid.uuid4())
        now = int(time.time())
        notifications = {
            "wrong clientState": [_note(stack, 1, clientState="forged")],
            "clientState in other case": [_note(stack, 1, clientState=CLIENT_STATE.upper())],
            "clientState with a space": [_note(stack, 1, clientState=CLIENT_STATE + " ")],
            "no clientState": [{k: v for k, v in _note(stack, 1).items() if k != "clientState"}],
            "other tenantId": [_note(stack, 1, tenantId=other)],
            "other organizationId": [_note(stack, 1, resourceData={"id": uid(1), "organizationId": other})],
            "no tenant at all": [{k: v for k, v in _note(stack, 1, resourceData={"id": uid(1)}).items()
                                  if k != "tenantId"}],
            "all items forged": [_note(stack, 1, clientState="x"), _note(stack, 2, tenantId=other)],
        }
        for label, items in notifications.items():
            status = await probe.post("graph/notifications", json.dumps({"value": items}).encode(), label=label)
            assert status == 401, label
        lifecycle = {"subscriptionId": "s-1", "clientState": CLIENT_STATE, "tenantId": stack.tenant_id,
                     "lifecycleEvent": "subscriptionRemoved"}
        for label, item in {"lifecycle, wrong clientState": {**lifecycle, "clientState": "forged"},
                            "lifecycle, other tenant": {**lifecycle, "tenantId": other}}.items():
            assert await probe.post("graph/lifecycle", json.dumps({"value": [item]}).encode(), label=label) == 401

        body = json.dumps({"eventId": "auth-1", "action": "upn_changed", "userId": uid(1)}).encode()
        good = sign_ticket(body, TICKET_SECRET, now)
        tickets = {
            "no signature headers": {},
            "wrong secret": sign_ticket(body, "wrong-secret", now),
            "signature of zeros": {**good, "X-Signature": "sha256=" + "0" * 64},
            "upper-case hex": {**good, "X-Signature": good["X-Signature"].upper().replace("SHA256", "sha256")},
            "timestamp 10 minutes old": sign_ticket(body, TICKET_SECRET, now - 600),
            "timestamp 10 minutes ahead": sign_ticket(body, TICKET_SECRET, now + 600),
            "signature replayed with a fresh timestamp": {**good, "X-Timestamp": str(now + 1)},
            "timestamp not a number": {**good, "X-Timestamp": "soon"},
            "no sha256= prefix": {**good, "X-Signature": good["X-Signature"].removeprefix("sha256=")},
        }
        for label, headers in tickets.items():
            assert await probe.post("tickets", body, headers=headers, label=label) == 401, label
        tampered = body.replace(b"auth-1", b"auth-2")
        assert await probe.post("tickets", tampered, headers=good, label="body changed after signing") == 401

        # Event Grid (no handshake): the tenant and clientState of each event are checked.
        upn_events = functions["upn_events"].get_user_function()
        grid_tried = grid_refused = 0
        for label, data in {"event for another tenant": {**_note(stack, 1), "tenantId": other},
                            "event with a forged clientState": {**_note(stack, 1), "clientState": "forged"}}.items():
            before = await snapshot_storage(azurite.connection_string, stack.tenant_id)
            grid_tried += 1
            with pytest.raises(AuthError):
                await upn_events(_grid_event(stack, 1, f"eg-{label}", data))
            after = await snapshot_storage(azurite.connection_string, stack.tenant_id)
            assert not storage_diff(before, after), label
            grid_refused += 1
        probe.last = await snapshot_storage(azurite.connection_string, stack.tenant_id)

        # Every input so far was forged (counted as sent, whatever the answer); the tickets below are valid.
        forged_sent, forged_refused = probe.sent + grid_tried, probe.refused + grid_refused

        # A valid ticket works once; the same event again (within the window) changes nothing.
        assert await probe.post("tickets", body, headers=good, label="valid ticket") == 200
        replay_before = probe.last
        status, text, _ = await stack.post("tickets", body, headers=sign_ticket(body, TICKET_SECRET,
                                                                                  int(time.time())))
        replay_after = await snapshot_storage(azurite.connection_string, stack.tenant_id)
        replayed = json.loads(text)
        # Read raw after the replay was handled: one flag whose history holds one entry (one change).
        flags = await raw_flags(azurite.connection_string, stack.tenant_id)
        record("auth_refusals", area="auth", bad_inputs=forged_sent, rejected=forged_refused,
               data_lost=sum("wrote" in p for p in probe.problems) + int(bool(storage_diff(replay_before,
                                                                                        replay_after))),
               detail={"notifications": len(notifications), "lifecycle": 2, "tickets": len(tickets) + 1,
                       "eventGrid": grid_refused, "problems": probe.problems[:3]})
        assert not probe.problems, probe.problems
        assert status == 200 and replayed["duplicate"] is True
        assert not storage_diff(replay_before, replay_after)
        assert len(flags) == 1 and len(flags[0].get("history") or []) == 1


SECRET_LOGGERS = ("azure", "httpx", "httpcore", "kiota_http", "kiota_abstractions", "msgraph", "msgraph_core",
                  "aiohttp", "urllib3", "shared", "passkey_guard", "devhost", "function_app", "asyncio")


async def test_no_secret_or_token_reaches_the_logs(azurite, functions, caplog):
    """A full run (seed, subscription handshake, renames through Graph, notifications, processing, tickets,
    plan, apply, verify, exports, refused forgeries, an Event Grid event) logged at DEBUG by every logger:
    no record, formatted with its arguments and any traceback, contains a secret or token."""
    secrets = {"GRAPH_DEV_TOKEN": f"dev-token-{uuid.uuid4().hex}",
               "NOTIFICATION_CLIENT_STATE": f"client-state-{uuid.uuid4().hex}",
               "TICKET_WEBHOOK_SECRET": f"ticket-secret-{uuid.uuid4().hex}"}
    caplog.set_level(logging.DEBUG)
    for name in SECRET_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    async with running_stack(azurite, policy_tenant(), ENFORCEMENT_MODE="enforce", ALLOW_ADHOC_DOCUMENTS="true",
                             **secrets) as stack:
        services = stack.services
        tenant_id = stack.tenant_id
        await sweep(services)
        services.settings = replace(services.settings, notification_url=f"{stack.host.url}/api/graph/notifications",
                                    lifecycle_notification_url=f"{stack.host.url}/api/graph/lifecycle")
        await ensure_subscription(services)
        for n in (1, 2):
            await rename(stack, n, f"user{n}@x.example")
        stack.sim.control("POST", "notifications/flush")

        async def flagged() -> bool:
            return len(await stack.all_flags()) == 2

        from tests.e2e.stack import eventually

        await eventually(flagged)
        body = json.dumps({"eventId": "log-1", "action": "recheck_user", "userId": uid(1)}).encode()
        assert (await stack.post("tickets", body, headers=sign_ticket(body, secrets["TICKET_WEBHOOK_SECRET"],
                                                                      int(time.time()))))[0] == 200
        assert (await stack.post("tickets", body, headers=sign_ticket(body, "forged", int(time.time()))))[0] == 401
        forged = {"value": [{**_note(stack, 1), "clientState": secrets["NOTIFICATION_CLIENT_STATE"][:-1] + "x"}]}
        assert (await stack.post("graph/notifications", json.dumps(forged)))[0] == 401
        status, text, _ = await stack.post("policy/plan", json.dumps({"document": policy_document()}))
        assert status == 202, text

        async def finished(run_id: str) -> dict | None:
            run = json.loads((await stack.get(f"runs/{run_id}"))[1])
            return run if run["status"] == "done" else None

        plan_id = (await eventually(lambda: finished(json.loads(text)["runId"])))["planId"]
        status, text, _ = await stack.post("policy/apply", json.dumps({"planId": plan_id}))
        assert status == 202, text
        assert (await eventually(lambda: finished(json.loads(text)["runId"])))["result"] == "applied"
        assert (await stack.post("policy/verify", ""))[0] == 200
        assert (await stack.get("flags/export"))[0] == 200
        assert (await stack.get("runs"))[0] == 200
        upn_events = functions["upn_events"].get_user_function()
        await upn_events(_grid_event(stack, 2, "eg-1", {**_note(stack, 2),
                                                        "clientState": secrets["NOTIFICATION_CLIENT_STATE"]}))
        stack.sim.configure(fault_503_rate=1.0)  # errors are logged too: with their tracebacks
        assert (await stack.get("health"))[0] == 503
        stack.sim.configure(fault_503_rate=0.0)

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    texts = [formatter.format(r) for r in caplog.records]
    needles = {**secrets, "Azurite account key": ACCOUNT_KEY, "Azurite account key (start)": ACCOUNT_KEY[:24]}
    leaks = {name: [t[:300] for t in texts if value in t][:3] for name, value in needles.items()}
    leaks = {k: v for k, v in leaks.items() if v}
    by_logger = {prefix: sum(r.name.startswith(prefix) for r in caplog.records)
                 for prefix in ("azure", "httpx", "httpcore", "shared", "devhost")}
    record("log_secrets", area="auth", detail={"records": len(texts), "byLogger": by_logger,
                                                "leaks": sorted(leaks)}, data_lost=len(leaks))
    assert not leaks, leaks
    assert by_logger["azure"] > 0 and by_logger["httpx"] + by_logger["httpcore"] > 0, by_logger  # DEBUG was on
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    assert any(tenant_id in t for t in texts)  # arguments are formatted in: a leak would be seen
