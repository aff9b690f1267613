"""Graph user events delivered through Event Grid: Microsoft's published CloudEvent, decoded by the library's
converter, is queued and flagged once; one whose source names another tenant changes nothing."""
from __future__ import annotations

import uuid

import pytest

from shared.errors import AuthError
from shared.upn.sweep import sweep
from tests import payloads
from tests.e2e.stack import eventually, running_stack, tenant, uid, user
from tests.upn.stack_steps import history_kinds, rename


async def test_an_event_grid_user_event_ends_as_a_flag_once(azurite, functions):
    """Microsoft's UserUpdated CloudEvent, decoded by the library's converter, is queued and flagged, once."""
    async with running_stack(azurite, tenant([user(1)])) as stack:
        await sweep(stack.services)
        stack.sim.configure(notify_paused=True)
        await rename(stack, 1, "user1@fabrikam.example")
        event = payloads.event_grid_event(_graph_event(stack, "eventgrid-user-updated", 1))
        for _ in range(2):  # Event Grid delivers at least once
            await functions["upn_events"].get_user_function()(event)
        flag = await eventually(lambda: stack.settled_flag(uid(1)))
        assert flag["source"] == "eventgrid" and flag["newUpn"] == "user1@fabrikam.example"
        assert len(await stack.all_flags()) == 1
        assert history_kinds(flag) == ["UPN changed", "passkey details read"]  # one detection, read once


def _graph_event(stack, name: str, n: int) -> dict:
    """Microsoft's published Graph event `name` for user n of this stack, with our tenant and clientState."""
    return payloads.load(name, tenant_id=stack.tenant_id, user_id=uid(n),
                         client_state=stack.services.settings.notification_client_state or "")


async def test_an_event_grid_event_from_another_tenant_source_changes_nothing(azurite, functions):
    """A CloudEvent whose source names another tenant is refused even when its data names ours."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await stack.services.store.queue.clear()
        delivered = _graph_event(stack, "eventgrid-user-updated", 1)
        delivered["source"] = f"/tenants/{uuid.uuid4()}/applications/{payloads.APPLICATION_ID}"
        with pytest.raises(AuthError, match="source"):
            await functions["upn_events"].get_user_function()(payloads.event_grid_event(delivered))
        assert await stack.services.store.queue.peek_count() == 0
