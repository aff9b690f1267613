"""UPN changes end to end: Graph simulator -> function app (devhost) -> queue -> processor -> flags, and the
webhook's own guards (clientState, the validation handshake). Each use case's own tests live in tests/upn."""
from __future__ import annotations

import json

from shared.upn.sweep import sweep
from tests import payloads
from tests.conftest import CLIENT_STATE
from tests.e2e.stack import YUBI, eventually, running_stack, tenant, uid, user
from tests.upn.stack_steps import notification, rename, subscribe


async def test_a_rename_through_graph_ends_as_a_flag(azurite):
    """PATCH userPrincipalName -> Graph notification -> function -> queue -> flag with the passkeys."""
    async with running_stack(azurite, tenant([user(1), user(2, key=None)])) as stack:
        assert (await sweep(stack.services))["seeded"]  # the first sync seeds snapshots, flags no one
        created = await subscribe(stack)
        assert created["action"] == "created"
        await rename(stack, 1, "user1@fabrikam.example")
        flag = await eventually(lambda: stack.settled_flag(uid(1)))
        assert flag["oldUpn"] == "user1@contoso.example" and flag["newUpn"] == "user1@fabrikam.example"
        assert flag["status"] == "pending" and flag["source"] == "notification"
        assert [p["aaGuid"] for p in flag["passkeys"]] == [YUBI]
        assert stack.host.invocations.get("graph_notifications", 0) >= 1


async def test_a_wrong_client_state_changes_nothing(azurite):
    """A notification whose clientState does not match is refused and nothing is queued or flagged."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        await stack.services.store.queue.clear()
        stack.sim.configure(notify_paused=True)
        await rename(stack, 1, "user1@fabrikam.example")
        status, text, _ = await stack.post("graph/notifications", notification(stack, 1, client_state="forged"))
        assert status == 401 and json.loads(text)["error"]["code"] == "unauthorized"
        assert "forged" not in text and CLIENT_STATE not in text
        assert await stack.services.store.queue.peek_count() == 0
        assert await stack.flag(uid(1)) is None


async def test_the_validation_handshake_echoes_the_token(azurite):
    """Graph's validation POST gets the decoded token back as text/plain, never sniffed as anything else."""
    published = payloads.load("validation-request", tenant_id="", client_state="")
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        for path in ("graph/notifications", "graph/lifecycle"):
            for token in ("Validation: a+b/c==", published["query"]["validationToken"]):
                status, text, headers = await stack.post(path, published["body"], headers=published["headers"],
                                                         params={"validationToken": token})
                assert status == 200 and text == token
                assert headers["Content-Type"].startswith("text/plain")
                assert headers["X-Content-Type-Options"] == "nosniff"
