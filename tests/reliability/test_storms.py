"""Error storms on Graph (30 % 429 with Retry-After 1 s, 5 % 503, dropped connections, latency spikes)
during a bulk flagging run, a sweep and a policy apply: afterwards the state matches the simulator's
ground truth, with no duplicate flag, no missed user and no duplicate policy object."""
from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from shared.errors import PasskeyGuardError
from shared.policy.apply import apply_document
from shared.policy.verify import verify
from shared.upn.subscriptions import ensure_subscription
from shared.upn.sweep import sweep
from tests.conftest import graph_waits_move_the_clock
from tests.e2e.stack import ANDROID, IOS, YUBI, running_stack, tenant, uid, user
from tests.reliability.helpers import Storm, clear_queue, drain, judge, poison_count, policy_document, policy_tenant
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


async def test_bulk_flagging_survives_an_error_storm(azurite, processor, monkeypatch):
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
            drained = await drain(conn, processor, within=120)
            print("PHASES", round(t0 - started, 1), round(t1 - t0, 1), round(time.monotonic() - t1, 1), drained)
        verdict = await judge(stack.services, stack.sim, original)
        poisoned = await poison_count(conn)
        lost = verdict.lost + poisoned
        record("bulk_flagging_storm", area="storm", faults=storm.faults, runs=2,
               survived=2 if lost == 0 else 0, data_lost=lost,
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
        record("policy_apply_storm", area="storm", faults=storm.faults, runs=len(outcomes),
               survived=len(outcomes) if lost == 0 else 0, data_lost=lost,
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
        flags = await stack.all_flags()
        record("batch_drop_retry", area="storm", faults=storm.faults, runs=len(outcomes),
               survived=outcomes.count("ok"), data_lost=100 - len(flags), detail={"outcomes": outcomes})
        assert storm.faults["drop"] > 0
        assert outcomes == ["ok"] * 5, outcomes
        assert len(flags) == 100
