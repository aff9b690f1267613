"""UPN changes end to end: Graph simulator -> function app (devhost) -> queue -> processor -> flags."""
from __future__ import annotations

import json
import time

from shared.upn.intake import sign_ticket
from shared.upn.subscriptions import ensure_subscription
from shared.upn.sweep import sweep
from shared.upn.tracker import track_flags
from tests import payloads
from tests.conftest import CLIENT_STATE, TICKET_SECRET
from tests.e2e.stack import YUBI, eventually, running_stack, tenant, uid, user


async def _subscribe(stack) -> dict:
    """Create the /users subscription pointing at the served app (the handshake runs for real)."""
    from dataclasses import replace

    settings = replace(stack.services.settings,
                       notification_url=f"{stack.host.url}/api/graph/notifications",
                       lifecycle_notification_url=f"{stack.host.url}/api/graph/lifecycle")
    stack.services.settings = settings
    return await ensure_subscription(stack.services)


async def _rename(stack, n: int, new_upn: str) -> None:
    from msgraph.generated.models.user import User

    builder = stack.services.graph.client.users.by_user_id(uid(n))
    await builder.patch(User(user_principal_name=new_upn))


def _notification(stack, n: int, *, client_state: str = CLIENT_STATE, name: str = "notification-user-updated"
                  ) -> bytes:
    """Microsoft's published change notification `name` for user n of this stack, as the bytes Graph POSTs."""
    return payloads.wire(payloads.load(name, tenant_id=stack.tenant_id, user_id=uid(n), client_state=client_state))


async def test_a_rename_through_graph_ends_as_a_flag(azurite):
    """PATCH userPrincipalName -> Graph notification -> function -> queue -> flag with the passkeys."""
    async with running_stack(azurite, tenant([user(1), user(2, key=None)])) as stack:
        assert (await sweep(stack.services))["seeded"]  # the first sync seeds snapshots, flags no one
        created = await _subscribe(stack)
        assert created["action"] == "created"
        await _rename(stack, 1, "user1@fabrikam.example")
        flag = await eventually(lambda: stack.flag(uid(1)))
        assert flag["oldUpn"] == "user1@contoso.example" and flag["newUpn"] == "user1@fabrikam.example"
        assert flag["status"] == "pending" and flag["source"] == "notification"
        assert [p["aaGuid"] for p in flag["passkeys"]] == [YUBI]
        assert stack.host.invocations.get("graph_notifications", 0) >= 1


async def test_a_renamed_user_without_a_passkey_gets_no_flag(azurite):
    """A rename of a user who holds no passkey updates the snapshot and flags no one."""
    async with running_stack(azurite, tenant([user(1), user(2, key=None)])) as stack:
        await sweep(stack.services)
        await _subscribe(stack)
        await _rename(stack, 2, "user2@fabrikam.example")
        await _rename(stack, 1, "user1@fabrikam.example")  # a marker: once its flag exists, user 2 was handled
        await eventually(lambda: stack.flag(uid(1)))

        async def snapshot_moved() -> bool:
            snaps = await stack.services.store.snapshots.get([uid(2)])
            return snaps.get(uid(2)) == "user2@fabrikam.example"

        await eventually(snapshot_moved)
        assert await stack.flag(uid(2)) is None


async def test_the_same_notification_three_times_makes_one_flag(azurite):
    """Replays of one notification are absorbed: one flag, one history entry."""
    async with running_stack(azurite, tenant([user(1)])) as stack:
        await sweep(stack.services)
        stack.sim.configure(notify_paused=True)  # deliver by hand instead
        await _rename(stack, 1, "user1@fabrikam.example")
        for _ in range(3):
            status, _, _ = await stack.post("graph/notifications", _notification(stack, 1))
            assert status == 202
        flag = await eventually(lambda: stack.flag(uid(1)))
        await eventually(lambda: _queue_empty(stack))
        flags = await stack.all_flags()
        assert len(flags) == 1 and len(flag["history"]) == 1


async def _queue_empty(stack) -> bool:
    return await stack.services.store.queue.peek_count() == 0


async def test_a_wrong_client_state_changes_nothing(azurite):
    """A notification whose clientState does not match is refused and nothing is queued or flagged."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        await stack.services.store.queue.clear()
        stack.sim.configure(notify_paused=True)
        await _rename(stack, 1, "user1@fabrikam.example")
        status, text, _ = await stack.post("graph/notifications", _notification(stack, 1, client_state="forged"))
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


async def test_a_sweep_catches_a_rename_whose_notification_was_dropped(azurite):
    """Graph loses the notification; the delta sweep still finds the rename and it ends as a flag."""
    async with running_stack(azurite, tenant([user(n) for n in range(1, 6)])) as stack:
        await sweep(stack.services)
        await _subscribe(stack)
        stack.sim.configure(notify_drop_rate=1.0)
        await _rename(stack, 3, "user3@fabrikam.example")
        result = await sweep(stack.services)
        assert result["messagesQueued"] == 1 and not result["seeded"]
        flag = await eventually(lambda: stack.flag(uid(3)))
        assert flag["source"] == "sweep" and flag["newUpn"] == "user3@fabrikam.example"
        assert len(await stack.all_flags()) == 1


async def test_a_crash_mid_sweep_resumes_without_missing_anyone(azurite):
    """A sweep that dies after some pages resumes from its checkpoint; every renamed user is flagged."""
    users = [user(n) for n in range(1, 41)]
    doc = tenant(users)
    doc["simulator"]["delta_page_size"] = 5
    async with running_stack(azurite, doc) as stack:
        await sweep(stack.services)
        renamed = list(range(1, 41, 2))
        for n in renamed:
            await _rename(stack, n, f"user{n}@fabrikam.example")
        first = await sweep(stack.services, max_pages=2)  # the process "dies" after two pages
        assert not first["complete"]
        stack.sim.configure(fault_drop_rate=1.0)           # and the next attempt fails on Graph
        try:
            await sweep(stack.services)
            raise AssertionError("the sweep should have failed while Graph dropped connections")
        except Exception as exc:
            assert getattr(exc, "code", "") == "graphUnavailable"
        stack.sim.configure(fault_drop_rate=0.0)
        rest = await sweep(stack.services)                  # resumes where the checkpoint says
        assert rest["complete"]

        async def all_flagged() -> bool:
            return {f["userId"] for f in await stack.all_flags()} == {uid(n) for n in renamed}

        await eventually(all_flagged)
        assert first["pages"] + rest["pages"] <= 6  # nothing was read twice but the page in flight


async def test_a_user_who_reregisters_gets_the_flag_resolved(azurite):
    """The user deletes the old passkey and registers a new one; the tracker resolves the flag."""
    async with running_stack(azurite, tenant([user(1)])) as stack:
        await sweep(stack.services)
        await _rename(stack, 1, "user1@fabrikam.example")
        await sweep(stack.services)
        flag = await eventually(lambda: stack.flag(uid(1)))
        old_key = flag["passkeys"][0]["id"]
        assert (await track_flags(stack.services))["changed"] == 0
        methods = stack.services.graph.client.users.by_user_id(uid(1)).authentication.fido2_methods
        await methods.by_fido2_authentication_method_id(old_key).delete()
        stack.sim.register_passkey(uid(1), aaGuid="de1e552d-db1d-4423-a619-566b625cdc84",
                                   displayName="Authenticator", model="Microsoft Authenticator")
        result = await track_flags(stack.services)
        assert result["changed"] == 1
        assert (await stack.flag(uid(1)))["status"] == "resolved"


async def test_stale_passkeys_are_removed_when_the_setting_allows(azurite):
    """With REMOVE_STALE_PASSKEYS on in enforce mode, the tracker deletes the pre-change passkeys and records it."""
    async with running_stack(azurite, tenant([user(1)]), REMOVE_STALE_PASSKEYS="true",
                             ENFORCEMENT_MODE="enforce") as stack:
        await sweep(stack.services)
        await _rename(stack, 1, "user1@fabrikam.example")
        await sweep(stack.services)
        flag = await eventually(lambda: stack.flag(uid(1)))
        result = await track_flags(stack.services)
        assert result["removedPasskeys"] == 1
        stored = await stack.flag(uid(1))
        assert stored["status"] == "removed" and stored["removedPasskeys"] == [flag["passkeys"][0]["id"]]
        remaining = stack.sim.state()
        me = next(u for u in remaining["users"] if u["id"] == uid(1))
        assert me.get("authentication", {}).get("fido2Methods", []) == []


async def test_a_ticket_with_a_bad_signature_or_old_timestamp_gets_401_and_writes_nothing(azurite):
    """Bad HMAC or an expired timestamp: 401, and no event, flag or queue message is written."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        await stack.services.store.queue.clear()
        body = json.dumps({"eventId": "evt-1", "action": "upn_changed", "userId": uid(1),
                           "ticketId": "INC-1"}).encode()
        good = sign_ticket(body, TICKET_SECRET, int(time.time()))
        cases = [
            {**good, "X-Signature": "sha256=" + "0" * 64},
            sign_ticket(body, "wrong-secret", int(time.time())),
            sign_ticket(body, TICKET_SECRET, int(time.time()) - 600),
        ]
        for headers in cases:
            status, text, _ = await stack.post("tickets", body, headers=headers)
            assert status == 401, text
        assert await stack.services.store.queue.peek_count() == 0
        assert await stack.flag(uid(1)) is None
        assert await stack.services.store.events.claim("ticket:evt-1", 60)  # never claimed


async def test_a_signed_ticket_flags_the_user_once(azurite):
    """A signed upn_changed ticket answers with the flag; the same event id again does nothing new."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        await _rename(stack, 1, "user1@fabrikam.example")
        body = json.dumps({"eventId": "evt-2", "action": "upn_changed", "userId": uid(1),
                           "ticketId": "INC-2"}).encode()
        status, text, _ = await stack.post("tickets", body, headers=sign_ticket(body, TICKET_SECRET,
                                                                                  int(time.time())))
        assert status == 200, text
        answer = json.loads(text)
        assert answer["flag"]["ticketId"] == "INC-2" and answer["flag"]["status"] == "pending"
        status, text, _ = await stack.post("tickets", body, headers=sign_ticket(body, TICKET_SECRET,
                                                                                  int(time.time())))
        assert status == 200 and json.loads(text)["duplicate"] is True
        assert len(await stack.all_flags()) == 1


async def test_flags_are_listed_paged_and_exported_as_csv(azurite):
    """GET /api/flags filters by status and pages; the CSV export names the passkey provider."""
    async with running_stack(azurite, tenant([user(n) for n in range(1, 6)])) as stack:
        await sweep(stack.services)
        for n in range(1, 6):
            await _rename(stack, n, f"user{n}@fabrikam.example")
        await sweep(stack.services)

        async def five() -> bool:
            return len(await stack.all_flags()) == 5

        await eventually(five)
        status, text, _ = await stack.get("flags", params={"status": "pending", "limit": "2"})
        page = json.loads(text)
        assert status == 200 and len(page["value"]) == 2 and page["nextPageToken"]
        status, text, _ = await stack.get("flags", params={"status": "bogus"})
        assert status == 400 and "status" in json.loads(text)["error"]["message"]
        status, text, headers = await stack.get("flags/export")
        assert status == 200 and headers["Content-Type"].startswith("text/csv")
        lines = text.strip().splitlines()
        assert lines[0].startswith("userId,oldUpn,newUpn,status") and len(lines) == 6


def _capture_messages(monkeypatch, *, fail_on_call: int | None = None) -> list[dict]:
    """Record every users message the sweep queues; optionally die (like a killed process) on one send."""
    import shared.upn.sweep as sweep_module

    sent: list[dict] = []
    real = sweep_module.send_messages
    calls = {"n": 0}

    async def spy(services, messages, *, delay=0):
        calls["n"] += 1
        if fail_on_call is not None and calls["n"] == fail_on_call:
            raise RuntimeError("process killed mid-sweep")
        sent.extend(messages)
        await real(services, messages, delay=delay)

    monkeypatch.setattr(sweep_module, "send_messages", spy)
    return sent


async def test_a_full_resync_queues_only_changed_users_with_their_old_upn(azurite, monkeypatch):
    """The sweep compares in memory: on a full re-read only renamed users are queued, each carrying its
    old UPN; unchanged users cost no message; a user without a snapshot gets one written, unflagged."""
    async with running_stack(azurite, tenant([user(n) for n in range(1, 21)])) as stack:
        await sweep(stack.services)
        for n in (3, 5):
            await _rename(stack, n, f"user{n}@fabrikam.example")
        await stack.services.store.snapshots.delete([uid(7)])  # never seen before
        stack.sim.invalidate_delta()  # the next sweep reads every user again
        sent = _capture_messages(monkeypatch)
        result = await sweep(stack.services)
        assert result["resyncs"] == 1 and result["complete"]
        entries = [u for m in sent for u in m["users"]]
        assert all(entry.pop("seenAt").endswith("Z") for entry in entries)  # when the sweep read that UPN
        # and when the snapshot had last seen the old one, so the processor need not read the row again
        assert all(entry.pop("oldUpnSeenAt").endswith("Z") for entry in entries)
        assert sorted(entries, key=lambda e: e["id"]) == [
            {"id": uid(n), "upn": f"user{n}@fabrikam.example", "oldUpn": f"user{n}@contoso.example"} for n in (3, 5)]
        assert await stack.services.store.snapshots.get([uid(7)]) == {uid(7): "user7@contoso.example"}

        async def both_flagged() -> bool:
            return {f["userId"] for f in await stack.all_flags()} == {uid(3), uid(5)}

        await eventually(both_flagged)
        flag = await stack.flag(uid(3))
        assert flag["oldUpn"] == "user3@contoso.example" and flag["newUpn"] == "user3@fabrikam.example"
        snaps = await stack.services.store.snapshots.get([uid(3), uid(5), uid(1)])
        assert snaps == {uid(3): "user3@fabrikam.example", uid(5): "user5@fabrikam.example",
                         uid(1): "user1@contoso.example"}


async def test_a_sweep_killed_while_holding_users_resumes_and_misses_no_one(azurite, monkeypatch):
    """A full re-read dies on its second send, with changed users held in memory and new snapshots
    already written; the resumed sweep reloads the snapshots, re-reads from the checkpoint and every
    renamed user ends with exactly one flag, no unchanged user ever queued."""
    users = [user(n) for n in range(1, 61)]
    doc = tenant(users)
    doc["simulator"]["delta_page_size"] = 5
    async with running_stack(azurite, doc) as stack:
        await sweep(stack.services)
        renamed = list(range(1, 61, 3))
        for n in renamed:
            await _rename(stack, n, f"user{n}@fabrikam.example")
        await stack.services.store.snapshots.delete([uid(2), uid(59)])
        stack.sim.invalidate_delta()
        sent = _capture_messages(monkeypatch, fail_on_call=2)
        try:
            await sweep(stack.services)
            raise AssertionError("the sweep should have died")
        except RuntimeError as exc:
            assert "killed" in str(exc)
        rest = await sweep(stack.services)
        assert rest["complete"]
        queued = [u["id"] for m in sent for u in m["users"]]
        assert set(queued) <= {uid(n) for n in renamed}  # nobody unchanged was queued

        async def all_flagged() -> bool:
            return {f["userId"] for f in await stack.all_flags()} == {uid(n) for n in renamed}

        await eventually(all_flagged)
        assert len(await stack.all_flags()) == len(renamed)
        snaps = await stack.services.store.snapshots.load_all()
        assert snaps == {uid(n): f"user{n}@{'fabrikam' if n in renamed else 'contoso'}.example" for n in range(1, 61)}


async def test_the_subscription_covers_updates_and_deletions(azurite):
    """The /users subscription asks Graph for `updated,deleted`, so a permanent deletion is heard too."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await _subscribe(stack)
        assert [s["changeType"] for s in stack.sim.state(users=False)["subscriptions"]] == ["updated,deleted"]


async def test_a_deleted_notification_for_a_user_graph_still_has_forgets_nothing(azurite, functions):
    """A `deleted` notification (webhook or Event Grid UserDeleted) for a user Graph still returns keeps the
    snapshot and the open flag: only a Graph 404 confirms a deletion."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        await sweep(stack.services)
        await stack.services.store.queue.clear()
        stack.sim.configure(notify_paused=True)
        await _rename(stack, 1, "user1@fabrikam.example")
        assert (await stack.post("graph/notifications", _notification(stack, 1)))[0] == 202
        assert await stack.host.drain_once() == 1
        assert (await stack.flag(uid(1)))["status"] == "pending"
        deleted = _notification(stack, 1, name="notification-user-deleted")
        assert (await stack.post("graph/notifications", deleted))[0] == 202
        await functions["upn_events"].get_user_function()(payloads.event_grid_event(payloads.load(
            "eventgrid-user-deleted", tenant_id=stack.tenant_id, user_id=uid(1), client_state=CLIENT_STATE)))
        assert await stack.host.drain_once() == 2
        snapshots = await stack.services.store.snapshots.get([uid(1)])
        assert snapshots == {uid(1): "user1@fabrikam.example"}
        flag = await stack.flag(uid(1))
        assert flag["status"] == "pending" and len(flag["history"]) == 1


async def test_a_user_deleted_for_good_is_forgotten_once_graph_says_404(azurite):
    """Soft delete then purge through Graph: the `deleted` notification, confirmed by a 404, dismisses the
    open flag and forgets the snapshot."""
    async with running_stack(azurite, tenant([user(1), user(2)])) as stack:
        await sweep(stack.services)
        await _subscribe(stack)
        await _rename(stack, 1, "user1@fabrikam.example")
        await eventually(lambda: stack.flag(uid(1)))
        await stack.services.graph.send_raw("DELETE", f"/users/{uid(1)}")
        await stack.services.graph.send_raw("DELETE", f"/directory/deletedItems/{uid(1)}")

        async def forgotten() -> bool:
            snapshots = await stack.services.store.snapshots.get([uid(1), uid(2)])
            flag = await stack.flag(uid(1))
            return uid(1) not in snapshots and uid(2) in snapshots and flag["status"] == "dismissed"

        await eventually(forgotten)
