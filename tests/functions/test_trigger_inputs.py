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
            assert await two_days_ago.claim_event(tenant, f"ticket:old-{i}", ttl_seconds=3600)
        assert await two_days_ago.claim_event(tenant, "policy-job|old", ttl_seconds=3600)
        assert await two_days_ago.claim_event(other, "ticket:old", ttl_seconds=3600)
        assert await services.store.claim_event(tenant, "ticket:live", ttl_seconds=7 * 86400)
        use_services(services)
        with caplog.at_level(logging.INFO, logger="shared.function_app"):
            await functions["events_purge"].get_user_function()(payloads.timer_request())
        assert "events_purge: {'purged': 4}" in caplog.text
        assert await services.store.purge_events(tenant) == 0  # nothing expired is left
        assert await services.store.claim_event(tenant, "ticket:live", ttl_seconds=60) is False  # still held
        assert await services.store.purge_events(other) == 1  # the other tenant's row was not touched
    finally:
        use_services(None)
        await two_days_ago.close()
        await services.close()
