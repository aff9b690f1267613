"""Unusable secrets fail closed: when NOTIFICATION_CLIENT_STATE or TICKET_WEBHOOK_SECRET is an unresolved Key Vault
reference (App Service hands the app the literal `@Microsoft.KeyVault(...)` string), a placeholder or shorter than
32 characters, the webhooks answer 503 `secretUnavailable` naming the setting (never its value) and write nothing,
even for a caller who sends that very value; health lists the settings by name."""
from __future__ import annotations

import json
import time
from typing import Any

import pytest

from shared.upn.ticket_webhook import sign_ticket
from tests.e2e.stack import running_stack, tenant, uid, user
from tests.reliability.helpers import snapshot_storage, storage_diff

KV_STATE = "@Microsoft.KeyVault(VaultName=kv-pg7x2;SecretName=graph-client-state)"
KV_TICKET = "@Microsoft.KeyVault(VaultName=kv-pg7x2;SecretName=ticket-webhook-secret)"

CASES = {
    "unresolved Key Vault references": ({"NOTIFICATION_CLIENT_STATE": KV_STATE, "TICKET_WEBHOOK_SECRET": KV_TICKET},
                                        "keyVaultReferenceUnresolved"),
    "placeholders": ({"NOTIFICATION_CLIENT_STATE": "<random string, at most 128 characters>",
                      "TICKET_WEBHOOK_SECRET": "<random string shared with the ticketing system>"}, "placeholder"),
    "short values": ({"NOTIFICATION_CLIENT_STATE": "test-client-state", "TICKET_WEBHOOK_SECRET": "test-ticket-secret"},
                     "tooShort"),
}


def _notification(tenant_id: str, client_state: str) -> dict[str, Any]:
    """A change notification as Graph sends it, carrying `client_state` (what an attacker would derive)."""
    return {"subscriptionId": "11111111-0000-4000-8000-000000000001", "clientState": client_state,
            "changeType": "updated", "resource": f"Users/{uid(1)}", "tenantId": tenant_id,
            "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z",
            "resourceData": {"@odata.type": "#Microsoft.Graph.User", "@odata.id": f"Users/{uid(1)}", "id": uid(1),
                             "organizationId": tenant_id}}


@pytest.mark.parametrize("case", list(CASES))
async def test_webhooks_refuse_with_503_and_write_nothing_when_a_secret_is_unusable(azurite, case):
    """Notifications, lifecycle and tickets carrying the unusable value itself get 503 secretUnavailable."""
    env, _reason = CASES[case]
    state, ticket_secret = env["NOTIFICATION_CLIENT_STATE"], env["TICKET_WEBHOOK_SECRET"]
    async with running_stack(azurite, tenant([user(1)]), drain=False, **env) as stack:
        tid = stack.tenant_id
        lifecycle = {"subscriptionId": "11111111-0000-4000-8000-000000000001", "clientState": state,
                     "tenantId": tid, "lifecycleEvent": "missed",
                     "subscriptionExpirationDateTime": "2030-01-01T00:00:00Z"}
        ticket = json.dumps({"eventId": "secrets-1", "action": "upn_changed", "userId": uid(1)}).encode()
        calls = [("graph/notifications", json.dumps({"value": [_notification(tid, state)]}).encode(), {},
                  "NOTIFICATION_CLIENT_STATE", state),
                 ("graph/lifecycle", json.dumps({"value": [lifecycle]}).encode(), {}, "NOTIFICATION_CLIENT_STATE",
                  state),
                 ("tickets", ticket, sign_ticket(ticket, ticket_secret, int(time.time())), "TICKET_WEBHOOK_SECRET",
                  ticket_secret)]
        for path, body, headers, _setting, value in calls:
            before = await snapshot_storage(azurite.connection_string, tid)
            status, text, _ = await stack.post(path, body, headers=headers)
            after = await snapshot_storage(azurite.connection_string, tid)
            assert status == 503, (path, status, text)
            error = json.loads(text)["error"]
            assert error == {"code": "secretUnavailable"}  # anonymous routes answer a code only; the log names it
            assert value not in text and "kv-pg7x2" not in text, path
            assert not storage_diff(before, after), path


async def test_health_names_the_unavailable_secrets_without_their_values(azurite):
    """Health is degraded and lists each unusable secret setting with its reason, never the value."""
    env, reason = CASES["unresolved Key Vault references"]
    async with running_stack(azurite, tenant([user(1)]), drain=False,
                             NOTIFICATION_CLIENT_STATE=env["NOTIFICATION_CLIENT_STATE"]) as stack:
        status, text, _ = await stack.get("health", principal=None)
        assert status == 503 and json.loads(text)["status"] == "degraded"
        assert "NOTIFICATION_CLIENT_STATE" not in text  # anonymous: no setting names either
        status, text, _ = await stack.get("health/details")
        body = json.loads(text)
        assert status == 200 and body["status"] == "degraded"
        assert body["unavailableSecrets"] == {"NOTIFICATION_CLIENT_STATE": reason}
        assert "kv-pg7x2" not in text and "graph-client-state" not in text
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        status, text, _ = await stack.get("health/details")
        assert status == 200 and json.loads(text)["unavailableSecrets"] == {}


async def test_event_grid_refuses_when_the_configured_client_state_is_unusable(azurite):
    """An Event Grid user event is not queued against an unresolved clientState reference (Event Grid retries)."""
    from shared.errors import SecretUnavailable
    from shared.upn.event_grid import intake_event_grid

    async with running_stack(azurite, tenant([user(1)]), drain=False, NOTIFICATION_CLIENT_STATE=KV_STATE) as stack:
        before = await snapshot_storage(azurite.connection_string, stack.tenant_id)
        with pytest.raises(SecretUnavailable):
            await intake_event_grid(stack.services, event_id="eg-secrets-1", subject=f"Users/{uid(1)}",
                                    event_type="Microsoft.Graph.UserUpdated",
                                    data=_notification(stack.tenant_id, KV_STATE))
        assert not storage_diff(before, await snapshot_storage(azurite.connection_string, stack.tenant_id))
