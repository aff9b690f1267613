"""Error storms on Graph (30 % 429 with Retry-After 1 s, 5 % 503, dropped connections, latency spikes)
during a bulk flagging run, a sweep and a policy apply, a storm on the change-notification path (dropped and
late notifications), and Graph's own bucket exhausted under a queue message: afterwards the state matches
the simulator's ground truth, with no duplicate flag, no missed user and no duplicate policy object."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from azure.functions.queue import QueueMessage
from azure.storage.queue.aio import QueueClient

from shared.config import QUEUE_NAME
from shared.errors import PasskeyGuardError
from shared.policy.apply import apply_document
from shared.policy.verify import verify
from shared.upn.subscriptions import ensure_subscription
from shared.upn.sweep import sweep
from tests.conftest import graph_waits_move_the_clock
from tests.e2e.stack import ANDROID, IOS, YUBI, running_stack, tenant, uid, user
from tests.reliability.helpers import (
    Storm,
    clear_queue,
    drain,
    judge,
    poison_count,
    policy_document,
    policy_tenant,
    raw_flags,
)
from tests.reliability.summary import record, soak_factor

ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = "contoso.example", "fabrikam.example"


async def sweep_until_complete(services: Any, *, attempts: int = 30) -> tuple[int, int, list[str]]:
    """Run the sweep as the timer would, again after each failure, until it completes.

    Returns (attempts, failed attempts, error codes); every failure must be one of our errors."""
    errors: list[str] = []
    for attempt in range(1, attempts + 1):
        try:
            result = await sweep(services, trigger="timer")
        except PasskeyGuardError as exc:
            errors.append(exc.code)
            continue
        if result["complete"]:
            return attempt, len(errors), errors
    raise AssertionError(f"the sweep did not complete in {attempts} attempts: {errors}")


async def _subscribe(stack: Any) -> None:
    stack.services.settings = replace(stack.services.settings,
                                      notification_url=f"{stack.host.url}/api/graph/notifications",
                                      lifecycle_notification_url=f"{stack.host.url}/api/graph/lifecycle")
    await ensure_subscription(stack.services)


async def _notifications_settled(stack: Any, renamed: int, within: float = 120.0) -> int:
    """Wait until the simulator has settled a change notification for each of the `renamed` users (delivered,
    dropped or given up on); `within` only bounds a failure."""
    stack.sim.control("POST", "notifications/flush")
    deadline = time.monotonic() + within
    while True:
        counts = (await asyncio.to_thread(stack.sim.stats))["notifications"]
        done = int(counts.get("delivered", 0)) + int(counts.get("dropped", 0)) + int(counts.get("failed", 0))
        if done >= renamed:
            return done
        assert time.monotonic() < deadline, f"{done} of {renamed} notifications settled within {within} s"
        await asyncio.sleep(0.1)


async def test_bulk_flagging_survives_an_error_storm(azurite, processor, slow_lane, monkeypatch):
    """Hundreds of users renamed: notifications and a sweep both queue them during a Graph error storm;
    every renamed user with a passkey ends with exactly one flag, and every snapshot holds the new UPN."""
    count = 250 * soak_factor()
    users = [user(n, key=YUBI if n % 3 else None) for n in range(1, count + 1)]
    doc = tenant(users)
    doc["simulator"]["delta_page_size"] = 50  # a few delta pages to read under the storm
    started = time.monotonic()
    async with running_stack(azurite, doc, drain=False) as stack:
        # Hundreds of passkey reads at Graph's 6 a second: the product's waits pass in the simulator's time.
        graph_waits_move_the_clock(stack.sim, monkeypatch)
        conn = azurite.connection_string
        await clear_queue(conn)
        assert (await sweep(stack.services))["seeded"]
        await _subscribe(stack)
        original = {u["id"]: u["userPrincipalName"] for u in users}
        renamed = [n for n in range(1, count + 1) if n % 5]  # 4 in 5 renamed; 2 in 3 hold a passkey
        stack.sim.control("POST", "users/bulk_rename", {"users": [
            {"id": uid(n), "userPrincipalName": f"user{n}@{NEW}"} for n in renamed]})
        await _notifications_settled(stack, len(renamed))
        with Storm(stack.sim, seed=7) as storm:
            t0 = time.monotonic()
            attempts, failed, errors = await sweep_until_complete(stack.services)
            t1 = time.monotonic()
            drained = await drain(conn, processor, slow_lane=slow_lane, within=120)
            print("PHASES", round(t0 - started, 1), round(t1 - t0, 1), round(time.monotonic() - t1, 1), drained)
        verdict = await judge(conn, stack.tenant_id, stack.sim, original)
        poisoned = await poison_count(conn)
        lost = verdict.lost + poisoned
        # Runs as they happened: each sweep attempt and each delivery. A failed one (our error, run again) is
        # apart; the completed ones survived only if the end state is the ground truth.
        completed = attempts - failed + drained.delivered
        record("bulk_flagging_storm", area="storm", faults=storm.faults, runs=attempts + drained.delivered
               + drained.failed, failed=failed + drained.clean_failed,
               survived=completed if lost == 0 else 0, data_lost=lost,
               detail={"users": count, "renamed": len(renamed), "expectedFlags": len(verdict.expected),
                       "sweepAttempts": attempts, "sweepFailures": failed, "deliveries": drained.delivered,
                       "failedDeliveries": drained.failed, "poisoned": poisoned,
                       "seconds": round(time.monotonic() - started, 1)})
        assert set(errors) <= {"graphUnavailable", "graphThrottled", "graphError"}, errors
        assert poisoned == 0, drained
        assert verdict.lost == 0, verdict.explain()
        assert len(verdict.expected) > 100 and sum(storm.faults.values()) > 0


async def test_policy_apply_survives_an_error_storm(azurite):
    """An apply under the storm either completes or fails with our error; re-run until applied, the
    tenant matches the desired state, YubiKey is still allowed, the strength and CA policy exist once,
    and one more apply writes nothing."""
    document = policy_document()
    async with running_stack(azurite, policy_tenant(), drain=False) as stack:
        outcomes: list[str] = []
        with Storm(stack.sim, seed=11) as storm:
            for _ in range(12):
                try:
                    result = await apply_document(stack.services, trigger="test", document=document)
                except PasskeyGuardError as exc:
                    outcomes.append(exc.code)
                    continue
                outcomes.append(result["result"])
                break
        state = stack.sim.state(users=False)
        fido2 = state["authenticationMethodConfigurations"]["fido2"]
        strengths = [p for p in state["authenticationStrengthPolicies"]
                     if p["displayName"] == document["authenticationStrength"]["displayName"]]
        cas = [p for p in state["conditionalAccessPolicies"]
               if p["displayName"] == document["conditionalAccess"]["displayName"]]
        report = await verify(stack.services, trigger="test", document=document)
        writes = stack.sim.stats()["writes"]
        again = await apply_document(stack.services, trigger="test", document=document)
        lost = int(YUBI not in fido2["keyRestrictions"]["aaGuids"]) + abs(len(strengths) - 1) + abs(len(cas) - 1) \
            + int(not report["passed"]) + int(again["result"] != "no-op")
        clean = [o for o in outcomes if o in ("graphUnavailable", "graphThrottled", "graphError")]
        completed = len(outcomes) - len(clean)
        record("policy_apply_storm", area="storm", faults=storm.faults, runs=len(outcomes), failed=len(clean),
               survived=completed if lost == 0 else 0, data_lost=lost,
               detail={"outcomes": outcomes, "strengths": len(strengths), "caPolicies": len(cas)})
        assert outcomes[-1] in ("applied", "no-op"), outcomes
        assert set(outcomes[:-1]) <= {"graphUnavailable", "graphThrottled", "graphError"}, outcomes
        assert fido2["keyRestrictions"]["aaGuids"][:1] == [YUBI] and {ANDROID, IOS} <= set(
            fido2["keyRestrictions"]["aaGuids"])
        assert len(strengths) == 1 and len(cas) == 1, (strengths, cas)
        assert report["passed"], report["markdown"]
        assert again["result"] == "no-op" and stack.sim.stats()["writes"] == writes
        assert sum(storm.faults.values()) > 0


async def test_a_dropped_batch_connection_does_not_fail_the_message(azurite, monkeypatch):
    """Connections dropped under a `$batch` of idempotent reads are retried inside the message: the
    processing succeeds instead of burning one of the message's five deliveries (then the poison queue)."""
    from shared.upn.processor import process_users

    users = [user(n) for n in range(1, 101)]
    async with running_stack(azurite, tenant(users), drain=False) as stack:
        graph_waits_move_the_clock(stack.sim, monkeypatch)  # 100 passkey reads at Graph's 6 a second
        await sweep(stack.services)
        stack.sim.control("POST", "users/bulk_rename", {"from_domain": OLD, "to_domain": NEW, "notify": False})
        outcomes: list[str] = []
        with Storm(stack.sim, seed=5, fault_429_rate=0.0, fault_503_rate=0.0, fault_drop_rate=0.25,
                   latency_ms=0.0) as storm:
            for start in range(0, 100, 20):
                chunk = [{"id": uid(n)} for n in range(start + 1, start + 21)]  # ids only: UPNs read from Graph
                try:
                    await process_users(stack.services, chunk, source="notification")
                    outcomes.append("ok")
                except PasskeyGuardError as exc:
                    outcomes.append(exc.code)
        flags = await raw_flags(azurite.connection_string, stack.tenant_id)
        flagged = {f["userId"] for f in flags}
        record("batch_drop_retry", area="storm", faults=storm.faults, runs=len(outcomes),
               survived=outcomes.count("ok") if len(flagged) == 100 else 0, data_lost=100 - len(flagged),
               detail={"outcomes": outcomes})
        assert storm.faults["drop"] > 0
        assert outcomes == ["ok"] * 5, outcomes
        assert len(flags) == 100


async def test_change_notifications_dropped_and_delayed_still_flag_everyone(azurite, processor, slow_lane):
    """A storm on the notification path: while users are renamed Graph drops a share of the change
    notifications and holds back the rest, delivering them late. What arrives is processed; the sweep, the
    safety net, finds the rest; every renamed user with a passkey ends with one flag holding one history entry."""
    count = 120 * soak_factor()
    users = [user(n, key=YUBI if n % 3 else None) for n in range(1, count + 1)]
    doc = tenant(users)
    doc["simulator"]["delta_page_size"] = 50
    async with running_stack(azurite, doc, drain=False) as stack:
        conn = azurite.connection_string
        await clear_queue(conn)
        assert (await sweep(stack.services))["seeded"]
        await _subscribe(stack)
        original = {u["id"]: u["userPrincipalName"] for u in users}
        renamed = [n for n in range(1, count + 1) if n % 4]
        stack.sim.reset_stats()
        stack.sim.configure(notify_drop_rate=0.3, notify_paused=True, fault_seed=13)
        try:
            stack.sim.control("POST", "users/bulk_rename", {"users": [
                {"id": uid(n), "userPrincipalName": f"user{n}@{NEW}"} for n in renamed]})
        finally:
            stack.sim.configure(notify_paused=False, notify_drop_rate=0.0)  # the held ones go out now, late
        await _notifications_settled(stack, len(renamed))
        notified = (await asyncio.to_thread(stack.sim.stats))["notifications"]
        by_notifications = await drain(conn, processor, slow_lane=slow_lane, within=120)
        flagged_early = {f["userId"] for f in await raw_flags(conn, stack.tenant_id)}
        attempts, failed, errors = await sweep_until_complete(stack.services)
        by_sweep = await drain(conn, processor, slow_lane=slow_lane, within=120)
        verdict = await judge(conn, stack.tenant_id, stack.sim, original)
        poisoned = await poison_count(conn)
        lost = verdict.lost + poisoned
        dropped, delayed = int(notified.get("dropped", 0)), int(notified.get("delivered", 0))
        runs = by_notifications.delivered + by_notifications.failed + attempts + by_sweep.delivered + by_sweep.failed
        clean = by_notifications.clean_failed + failed + by_sweep.clean_failed
        completed = by_notifications.delivered + attempts - failed + by_sweep.delivered
        record("notification_storm", area="storm", faults={"notify_drop": dropped, "notify_delay": delayed},
               runs=runs, failed=clean, survived=completed if lost == 0 else 0, data_lost=lost,
               detail={"users": count, "renamed": len(renamed), "expectedFlags": len(verdict.expected),
                       "notificationsDropped": dropped, "notificationsDeliveredLate": delayed,
                       "flaggedFromNotifications": len(flagged_early & verdict.expected),
                       "flaggedBySweep": len(verdict.expected - flagged_early), "sweepAttempts": attempts,
                       "poisoned": poisoned})
        assert not errors, errors
        assert dropped > 0 and delayed > 0, notified  # both kinds of storm happened
        assert flagged_early & verdict.expected, "no late notification was processed"
        assert verdict.expected - flagged_early, "the sweep had nothing left to find"
        assert poisoned == 0
        assert verdict.lost == 0, verdict.explain()
        assert len(verdict.expected) == len([n for n in renamed if n % 3])


async def test_a_message_throttled_by_an_exhausted_budget_is_requeued_hidden_not_poisoned(azurite, processor,
                                                                                          slow_lane):
    """Graph's resource-unit bucket exhausted (a tiny bucket on a frozen clock: no fault injected): after the
    gateway's retries the queue function re-queues the message hidden for Retry-After and returns, so the
    delivery does not count toward the poison queue; once the bucket refills the re-queued message flags
    the users (and the slow lane's message it queues reads their passkeys)."""
    from shared.upn.messages import users_message

    users = [user(n) for n in range(1, 6)]
    async with running_stack(azurite, tenant(users), drain=False) as stack:
        conn = azurite.connection_string
        await clear_queue(conn)
        assert (await sweep(stack.services))["seeded"]
        await clear_queue(conn)
        original = {u["id"]: u["userPrincipalName"] for u in users}
        stack.sim.control("POST", "users/bulk_rename", {"from_domain": OLD, "to_domain": NEW, "notify": False})
        body = json.dumps({**users_message([{"id": uid(n)} for n in range(1, 6)], source="notification"),
                           "tenant": stack.tenant_id}).encode()
        stack.sim.reset_stats()
        # One resource unit, refilled fast (Retry-After: 1 s) but on a frozen clock: the first read spends it,
        # nothing refills, every later read is throttled by the bucket itself.
        stack.sim.throttle_clock(frozen=True)
        stack.sim.control("POST", "throttle/reset")
        stack.sim.configure(throttle_capacity_ru=1.0, throttle_refill_ru_per_s=1000.0)
        outcome = "returned"
        try:
            await processor(QueueMessage(id="budget", body=body, dequeue_count=1, pop_receipt="x"))
        except Exception as exc:  # recorded, then asserted below
            outcome = getattr(exc, "code", type(exc).__name__)
        async with QueueClient.from_connection_string(conn, QUEUE_NAME) as queue:
            waiting = (await queue.get_queue_properties()).approximate_message_count
            visible = [m async for m in queue.receive_messages(max_messages=32, visibility_timeout=1)]
        stats = stack.sim.stats()
        stack.sim.configure(throttle_capacity_ru=8000.0, throttle_refill_ru_per_s=800.0)
        stack.sim.control("POST", "throttle/reset")
        stack.sim.throttle_clock(frozen=False)
        drained = await drain(conn, processor, slow_lane=slow_lane, within=60)
        verdict = await judge(conn, stack.tenant_id, stack.sim, original)
        poisoned = await poison_count(conn)
        throttled = int(stats["throttled"]["total"])
        lost = verdict.lost + poisoned
        requeued = outcome == "returned" and waiting == 1 and not visible
        record("budget_requeue", area="storm", faults={"throttled": throttled},
               runs=1 + drained.delivered + drained.failed,
               failed=drained.clean_failed, survived=(int(requeued) + drained.delivered) if lost == 0 else 0,
               data_lost=lost, detail={"outcome": outcome, "queuedAfter": waiting, "visibleAfter": len(visible),
                                       "bucket429s": throttled, "injected": stats["faults"],
                                       "deliveriesAfterRefill": drained.delivered})
        assert throttled > 0 and not stats["faults"], stats  # the bucket's 429s, not an injected fault
        assert outcome == "returned", outcome  # the delivery succeeded: nothing toward the poison queue
        assert waiting == 1 and not visible, (waiting, visible)  # queued again, hidden for Retry-After
        assert drained.delivered == 2 and drained.failed == 0, drained  # the re-queued message, then its slow lane
        assert poisoned == 0
        assert verdict.lost == 0 and len(verdict.expected) == 5, verdict.explain()
