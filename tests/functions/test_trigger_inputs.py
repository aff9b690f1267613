"""The functions take their trigger inputs as the host builds them: HTTP requests from azure-functions' HTTP
converter and Event Grid events from its Event Grid converter, carrying Microsoft's published payloads."""
from __future__ import annotations

import json
import time

from shared.upn.sweep import sweep
from shared.upn.ticket_webhook import sign_ticket
from tests import payloads
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
