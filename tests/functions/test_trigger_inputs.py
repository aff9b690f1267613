"""The functions take their trigger inputs as the host builds them: HTTP requests from azure-functions' HTTP
converter and Event Grid events from its Event Grid converter, carrying Microsoft's published payloads, and
timer requests from its timer converter."""
from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

from shared.config import Settings
from shared.services import Services, use_services
from shared.state import StateStore
from shared.upn.sweep import sweep
from shared.upn.ticket_webhook import sign_ticket
from tests import payloads
from tests.conftest import new_tenant_id
from tests.e2e.stack import running_stack, tenant, uid, user

BASE = "https://passkey-guard.example.net/api/"


async def test_the_graph_webhooks_answer_the_published_requests(azurite, functions):
    """Validation request (echoed, nosniff), change notification and lifecycle notification, each 2xx."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await stack.services.store.queue.clear()  # one queue serves every test's tenant
        state = stack.services.settings.notification_client_state or ""
        for name in ("graph_notifications", "graph_lifecycle"):
            route = name.replace("_", "/", 1)
            request = payloads.validation_request(BASE + route)
            response = await functions[name].get_user_function()(request)
            assert response.status_code == 200 and response.mimetype == "text/plain"
            assert response.get_body().decode() == request.params["validationToken"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        note = payloads.load("notification-user-updated", tenant_id=stack.tenant_id, user_id=uid(1),
                             client_state=state)
        response = await functions["graph_notifications"].get_user_function()(payloads.http_request(
            "POST", BASE + "graph/notifications", body=payloads.wire(note),
            headers={"Content-Type": "application/json; charset=utf-8"}))
        assert response.status_code == 202
        assert json.loads(response.get_body()) == {"accepted": 1, "rejected": 0, "usersQueued": 1}
        for event in ("missed", "subscription-removed", "reauthorization-required"):
            body = payloads.load(f"lifecycle-{event}", tenant_id=stack.tenant_id, client_state=state)
            response = await functions["graph_lifecycle"].get_user_function()(payloads.http_request(
                "POST", BASE + "graph/lifecycle", body=payloads.wire(body),
                headers={"Content-Type": "application/json; charset=utf-8"}))
            assert response.status_code == 202 and json.loads(response.get_body())["accepted"] == 1
        assert await stack.services.store.queue.peek_count() == 4


async def test_the_ticket_webhook_takes_the_request_the_host_builds(azurite, functions):
    """A signed ticket, as the HTTP converter hands it over, is verified and carried out."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        body = json.dumps({"eventId": "conv-1", "action": "recheck_user", "userId": uid(1)}).encode()
        secret = stack.services.settings.ticket_webhook_secret or ""
        response = await functions["tickets"].get_user_function()(payloads.http_request(
            "POST", BASE + "tickets", body=body,
            headers={"Content-Type": "application/json", **sign_ticket(body, secret, int(time.time()))}))
        assert response.status_code == 200, response.get_body()
        answer = json.loads(response.get_body())
        assert answer["eventId"] == "conv-1" and answer["duplicate"] is False and answer["userId"] == uid(1)


async def test_the_event_grid_function_takes_the_decoded_cloud_events(azurite, functions):
    """Microsoft's UserUpdated, UserDeleted and reauthorization CloudEvents, decoded by the library, are
    each queued (user work or lifecycle work)."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await stack.services.store.queue.clear()  # one queue serves every test's tenant
        state = stack.services.settings.notification_client_state or ""
        for name in ("eventgrid-user-updated", "eventgrid-user-deleted",
                     "eventgrid-subscription-reauthorization-required"):
            event = payloads.event_grid_event(payloads.load(name, tenant_id=stack.tenant_id, user_id=uid(1),
                                                            client_state=state))
            await functions["upn_events"].get_user_function()(event)
        assert await stack.services.store.queue.peek_count() == 3


async def test_the_events_purge_timer_deletes_expired_claims_from_the_request_the_host_builds(azurite, functions,
                                                                                             caplog):
    """events_purge, handed the TimerRequest the host builds, deletes this tenant's expired idempotency keys from
    the events table, keeps its live ones and every other tenant's rows, and logs how many went."""
    tenant, other = new_tenant_id(), new_tenant_id()
    settings = Settings.from_env({"TENANT_ID": tenant, "GRAPH_BASE_URL": "http://127.0.0.1:9/v1.0",
                                  "STATE_STORAGE": azurite.connection_string})
    services = Services.from_settings(settings)  # Graph on a closed port: the purge makes no Graph call
    two_days_ago = StateStore.from_settings(settings, clock=lambda: datetime.now(UTC) - timedelta(days=2))
    try:
        for i in range(3):  # claimed two days ago for an hour: expired
            assert await two_days_ago.events.claim(f"ticket:old-{i}", ttl_seconds=3600)
        assert await two_days_ago.events.claim("policy-job|old", ttl_seconds=3600)
        assert await two_days_ago.for_tenant(other).events.claim("ticket:old", ttl_seconds=3600)
        assert await services.store.events.claim("ticket:live", ttl_seconds=7 * 86400)
        use_services(services)
        with caplog.at_level(logging.INFO, logger="shared.function_app"):
            await functions["events_purge"].get_user_function()(payloads.timer_request())
        assert "events_purge: {'purged': 4, 'snapshotsReclaimed': 0, 'holdersReclaimed': 0}" in caplog.text
        assert await services.store.events.purge() == 0  # nothing expired is left
        assert await services.store.events.claim("ticket:live", ttl_seconds=60) is False  # still held
        assert await services.store.for_tenant(other).events.purge() == 1  # the other tenant's row was not touched
    finally:
        use_services(None)
        await two_days_ago.close()
        await services.close()


async def test_the_sweep_timer_records_a_run_whose_progress_get_runs_shows_while_it_works(azurite, functions,
                                                                                          monkeypatch):
    """delta_sweep, handed the host's TimerRequest, records a sweep run by the app (trigger timer, its mode);
    GET /api/runs/{runId}, handed the host's HttpRequest at each page's end, answers `running` with the
    users read so far, and `done` with the result and counts once the timer returns."""
    from types import SimpleNamespace

    import shared.progress as progress_module
    from tests.e2e.stack import ADMIN_PRINCIPAL

    async def get_run(run_id: str) -> dict:
        response = await functions["run_get"].get_user_function()(payloads.http_request(
            "GET", BASE + f"runs/{run_id}", route_params={"runId": run_id},
            headers={"X-MS-CLIENT-PRINCIPAL": ADMIN_PRINCIPAL}))
        assert response.status_code == 200, response.get_body()
        return json.loads(response.get_body())

    clock = SimpleNamespace(now=1000.0)  # a second a page on the progress's clock, so each page is written
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    seen: list[dict] = []
    real_advance = progress_module.Progress.advance

    async def advance(self, done, **kwargs):
        clock.now += 1.0
        await real_advance(self, done, **kwargs)
        [newest], _ = await stack.services.store.runs.page(limit=1)
        seen.append(await get_run(newest["id"]))

    doc = tenant([user(n) for n in range(1, 13)])
    doc["simulator"]["delta_page_size"] = 4
    async with running_stack(azurite, doc, drain=False) as stack:
        monkeypatch.setattr(progress_module.Progress, "advance", advance)
        await functions["delta_sweep"].get_user_function()(payloads.timer_request())
        assert [(r["status"], r["progress"]["done"]) for r in seen] == [("running", 4), ("running", 8),
                                                                        ("running", 12)]
        assert all(r["progress"]["total"] == 12 and r["progress"]["phase"] == "seeding" for r in seen)
        final = await get_run(seen[0]["runId"])
        assert final["status"] == "done" and final["result"] == "complete" and final["kind"] == "sweep"
        assert final["trigger"] == "timer" and final["actor"] == {"name": "the app"} and final["mode"] == "audit"
        assert final["users"] == 12 and final["pages"] == 3 and final["progress"]["done"] == 12
