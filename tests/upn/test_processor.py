"""The processor through the served app: a rename without passkeys flags no one, replays make one flag, and a
deleted user is forgotten only once Graph answers 404."""
from __future__ import annotations

from shared.upn.sweep import sweep
from tests import payloads
from tests.conftest import CLIENT_STATE
from tests.e2e.stack import eventually, running_stack, tenant, uid, user
from tests.upn.stack_steps import as_tenant_admin, history_kinds, notification, rename, subscribe


async def test_a_renamed_user_without_a_passkey_gets_no_flag(azurite):
    """A rename of a user who holds no passkey updates the snapshot and flags no one."""
    async with running_stack(azurite, tenant([user(1), user(2, key=None)])) as stack:
        await sweep(stack.services)
        await subscribe(stack)
        await rename(stack, 2, "user2@fabrikam.example")
        await rename(stack, 1, "user1@fabrikam.example")  # a marker: once its flag exists, user 2 was handled
        await eventually(lambda: stack.settled_flag(uid(1)))

        async def snapshot_moved() -> bool:
            snaps = await stack.services.store.snapshots.get([uid(2)])
            return snaps.get(uid(2)) == "user2@fabrikam.example"

        await eventually(snapshot_moved)
        assert await stack.flag(uid(2)) is None


async def test_the_same_notification_three_times_makes_one_flag(azurite):
    """Replays of one notification are absorbed: one flag, one detection in its history (and the slow lane's one
    reading of its passkeys)."""
    async with running_stack(azurite, tenant([user(1)])) as stack:
        await sweep(stack.services)
        stack.sim.configure(notify_paused=True)  # deliver by hand instead
        await rename(stack, 1, "user1@fabrikam.example")
        for _ in range(3):
            status, _, _ = await stack.post("graph/notifications", notification(stack, 1))
            assert status == 202
        flag = await eventually(lambda: stack.settled_flag(uid(1)))
        await eventually(lambda: _queue_empty(stack))
        flags = await stack.all_flags()
        assert len(flags) == 1 and history_kinds(flag) == ["UPN changed", "passkey details read"]


async def _queue_empty(stack) -> bool:
    return await stack.queues_empty()


async def test_a_deleted_notification_for_a_user_graph_still_has_forgets_nothing(azurite, functions):
    """A `deleted` notification (webhook or Event Grid UserDeleted) for a user Graph still returns keeps the
    snapshot and the open flag: only a Graph 404 confirms a deletion."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        await stack.services.store.queue.clear()
        stack.sim.configure(notify_paused=True)
        await rename(stack, 1, "user1@fabrikam.example")
        assert (await stack.post("graph/notifications", notification(stack, 1)))[0] == 202
        assert await stack.host.drain_once() == 2  # the processor's message, then the slow lane's it queued
        assert (await stack.flag(uid(1)))["status"] == "pending"
        deleted = notification(stack, 1, name="notification-user-deleted")
        assert (await stack.post("graph/notifications", deleted))[0] == 202
        await functions["upn_events"].get_user_function()(payloads.event_grid_event(payloads.load(
            "eventgrid-user-deleted", tenant_id=stack.tenant_id, user_id=uid(1), client_state=CLIENT_STATE)))
        assert await stack.host.drain_once() == 2
        snapshots = await stack.services.store.snapshots.get([uid(1)])
        assert snapshots == {uid(1): "user1@fabrikam.example"}
        flag = await stack.flag(uid(1))
        assert flag["status"] == "pending" and history_kinds(flag) == ["UPN changed", "passkey details read"]


async def test_a_user_deleted_for_good_is_forgotten_once_graph_says_404(azurite):
    """Soft delete then purge through Graph: the `deleted` notification, confirmed by a 404, dismisses the
    open flag and forgets the snapshot."""
    async with running_stack(azurite, tenant([user(1), user(2)])) as stack:
        await sweep(stack.services)
        await subscribe(stack)
        await rename(stack, 1, "user1@fabrikam.example")
        await eventually(lambda: stack.settled_flag(uid(1)))
        await as_tenant_admin(stack, "DELETE", f"/users/{uid(1)}")
        await as_tenant_admin(stack, "DELETE", f"/directory/deletedItems/{uid(1)}")

        async def forgotten() -> bool:
            snapshots = await stack.services.store.snapshots.get([uid(1), uid(2)])
            flag = await stack.flag(uid(1))
            return uid(1) not in snapshots and uid(2) in snapshots and flag["status"] == "dismissed"

        await eventually(forgotten)
