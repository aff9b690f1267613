"""Races: two applies at once (at most one writes; the other yields with 409 through the lease), and
several processors handling the same users at the same moment (one flag per user, one history entry)."""
from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import Any

from azure.functions.queue import QueueMessage

from shared.errors import ConflictError
from shared.policy.apply import apply_document
from shared.services import Services
from shared.upn.sweep import sweep
from shared.upn.ticket_webhook import sign_ticket
from tests.conftest import TICKET_SECRET, graph_waits_move_the_clock, make_settings
from tests.e2e.stack import YUBI, running_stack, tenant, uid, user
from tests.reliability.helpers import policy_document, policy_tenant, raw_flags
from tests.reliability.summary import record

INSTANCES = 4


async def _instances(azurite: Any, stack: Any, count: int) -> list[Services]:
    """`count` more Services for the same tenant: separate processes of the same app, as on scale-out."""
    return [Services.from_settings(make_settings(azurite, stack.sim, stack.tenant_id)) for _ in range(count)]


async def _run(stack: Any, run_id: str) -> dict[str, Any]:
    status, text, _ = await stack.get(f"runs/{run_id}")
    assert status == 200, text
    return json.loads(text)


async def test_two_applies_over_http_at_once_one_writes_the_other_yields(azurite):
    """Two stored plans applied by two requests (both 202) whose jobs run at the same moment on two
    workers: one applied, one refused with a 409 code that says it yielded to the running apply; Graph
    sees the writes of exactly one apply."""
    document = policy_document()
    async with running_stack(azurite, policy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             ALLOW_ADHOC_DOCUMENTS="true") as stack:
        plan_ids = []
        for _ in range(2):
            status, text, _ = await stack.post("policy/plan", json.dumps({"document": document}))
            assert status == 202, text
            await stack.host.drain_once()
            plan_ids.append((await _run(stack, json.loads(text)["runId"]))["planId"])
        answers = await asyncio.gather(*(stack.post("policy/apply", json.dumps({"planId": p})) for p in plan_ids))
        assert [status for status, _, _ in answers] == [202, 202], answers
        run_ids = {json.loads(text)["runId"] for _, text, _ in answers}
        messages = [m for m in await stack.services.store.policy_jobs.receive(max_messages=32)
                    if m.body["runId"] in run_ids]
        job = stack.host.functions["policy_jobs"].get_user_function()
        stack.sim.configure(latency_ms=120.0)  # each apply takes a while: the two overlap
        stack.sim.reset_stats()
        await asyncio.gather(*(job(QueueMessage(id=m.id, body=m.text.encode(), dequeue_count=1)) for m in messages))
        for message in messages:
            await stack.services.store.policy_jobs.delete(message)
        writes = stack.sim.stats()["writes"]
        runs = {run["result"]: run for run in [await _run(stack, r) for r in run_ids]}
        applied = runs.get("applied", {})
        refused = runs.get("refused", {}).get("error", {})
        # Each apply job is a run: the winner survived when Graph saw exactly its writes, a loser when it yielded
        # with the lease's 409 code (and wrote nothing, which the winner's count shows).
        outcomes = [await _run(stack, r) for r in run_ids]
        alone = writes == len(applied.get("writes", []))
        survived = sum(1 for run in outcomes if alone and (
            run["result"] == "applied" or (run["result"] == "refused" and (run.get("error") or {}).get("code")
                                           == "conflict" and "yielded" in run["error"].get("message", ""))))
        ok = sorted(runs) == ["applied", "refused"] and alone
        record("apply_race_http", area="concurrency", faults={"race": len(messages) - 1}, runs=len(outcomes),
               survived=survived, data_lost=0 if ok else 1, detail={"results": sorted(runs), "graphWrites": writes,
                                                  "refused": refused.get("message")})
        assert len(messages) == 2 and sorted(runs) == ["applied", "refused"], runs
        assert refused["code"] == "conflict" and "yielded" in refused["message"], refused
        assert writes == len(applied["writes"]) > 0


async def test_several_instances_applying_at_once_write_once(azurite):
    """Four instances apply the same document at the same moment: exactly one applies, every other
    one yields with ConflictError and writes nothing; a second round (a new change) goes the same way."""
    async with running_stack(azurite, policy_tenant(), drain=False) as stack:
        others = await _instances(azurite, stack, INSTANCES)
        stack.sim.configure(latency_ms=100.0)
        rounds: list[dict[str, Any]] = []
        try:
            for change in (None, False):
                document = policy_document()
                if change is not None:
                    document["passkeyMethod"]["selfServiceRegistration"] = change
                stack.sim.reset_stats()
                results = await asyncio.gather(*(apply_document(s, trigger="test", document=copy.deepcopy(document))
                                                 for s in others), return_exceptions=True)
                applied = [r for r in results if isinstance(r, dict) and r["result"] == "applied"]
                yielded = [r for r in results if isinstance(r, ConflictError) and "yielded" in r.message]
                others_ = [r for r in results if r not in applied and r not in yielded]
                rounds.append({"applied": len(applied), "yielded": len(yielded),
                               "other": [getattr(r, "code", None) or r.get("result") for r in others_],
                               "graphWrites": stack.sim.stats()["writes"],
                               "winnerWrites": len(applied[0]["writes"]) if applied else None})
        finally:
            for services in others:
                await services.close()
        ok = all(r["applied"] == 1 and r["graphWrites"] == r["winnerWrites"] for r in rounds)
        # Each instance's apply is a run: in a round where exactly one applied and Graph saw only its writes, the
        # winner and every instance that yielded (or found nothing to do) survived; anything else did not.
        contenders = sum(r["applied"] + r["yielded"] + len(r["other"]) for r in rounds)
        survived = sum(r["applied"] + r["yielded"] + r["other"].count("no-op") for r in rounds
                       if r["applied"] == 1 and r["graphWrites"] == r["winnerWrites"])
        record("apply_race_instances", area="concurrency", faults={"race": contenders - len(rounds)},
               runs=contenders, survived=survived, data_lost=0 if ok else 1, detail={"rounds": rounds})
        for r in rounds:
            assert r["applied"] == 1, rounds
            assert r["graphWrites"] == r["winnerWrites"], rounds  # nobody else wrote
            assert r["yielded"] + r["other"].count("no-op") == INSTANCES - 1, rounds


async def test_processors_racing_on_the_same_users_make_one_flag_each(azurite, processor, monkeypatch):
    """The same 20 renamed users reach six processors at once (sweep and notification messages, twice
    each, plus two tickets), then the slow lane's messages they queued reach two instances at once each: read raw
    once all were processed, every user ends with one pending flag, its passkey details complete, whose history
    holds exactly one detection and at most one reading of its passkeys (one rename: one change, however many
    deliveries)."""
    users = [user(n) for n in range(1, 21)]
    async with running_stack(azurite, tenant(users), drain=False) as stack:
        graph_waits_move_the_clock(stack.sim, monkeypatch)  # six contenders' passkey reads at Graph's 6 a second
        await sweep(stack.services)
        stack.sim.control("POST", "users/bulk_rename", {"from_domain": "contoso.example",
                                                        "to_domain": "fabrikam.example", "notify": False})
        others = await _instances(azurite, stack, 2)
        from shared.upn.dispatch import handle_message

        def message(source: str, with_upn: bool) -> bytes:
            entries = [{"id": uid(n), **({"upn": f"user{n}@fabrikam.example"} if with_upn else {})}
                       for n in range(1, 21)]
            return json.dumps({"v": 1, "kind": "users", "source": source, "users": entries,
                               "tenant": stack.tenant_id}).encode()

        async def ticket(n: int, event: str) -> int:
            body = json.dumps({"eventId": event, "action": "upn_changed", "userId": uid(n)}).encode()
            status, _, _ = await stack.post("tickets", body,
                                            headers=sign_ticket(body, TICKET_SECRET, int(time.time())))
            return status

        contenders = [
            *(handle_message(s, message("sweep", True)) for s in others),
            *(handle_message(s, message("notification", False)) for s in others),
            processor_call(processor, message("sweep", True)),
            processor_call(processor, message("notification", False)),
        ]
        try:
            results = await asyncio.gather(*contenders, ticket(1, "race-1"), ticket(2, "race-2"),
                                           return_exceptions=True)
            # The slow lane's messages the processors queued, each delivered twice at once to two instances.
            from shared.upn.dispatch import handle_passkey_message

            slow = await stack.services.store.passkey_reads.receive(32)
            results += await asyncio.gather(*(handle_passkey_message(s, m.text) for m in slow for s in others),
                                            return_exceptions=True)
            for m in slow:
                await stack.services.store.passkey_reads.delete(m)
        finally:
            for services in others:
                await services.close()
        failures = [r for r in results if isinstance(r, BaseException)]
        # Read back raw after every delivery was processed. Rows are keyed by user, so counting rows can never
        # show a duplicate: the history can. One rename each: exactly one detection per flag.
        flags = await raw_flags(azurite.connection_string, stack.tenant_id)
        per_user: dict[str, int] = {}
        for flag in flags:
            per_user[flag["userId"]] = per_user.get(flag["userId"], 0) + 1
        bad = [f["userId"] for f in flags if _detections(f) != 1 or _details_read(f) > 1 or f["status"] != "pending"
               or f.get("passkeyDetails") != "complete"]
        extra_entries = sum(max(0, _detections(f) - 1) + max(0, _details_read(f) - 1) for f in flags)
        lost = (20 - len(per_user)) + sum(n - 1 for n in per_user.values()) + len(bad)
        record("processor_race", area="concurrency", faults={"race": len(results) - 1},
               runs=len(results), survived=len(results) - len(failures) if lost == 0 else 0,
               data_lost=lost, detail={"flags": len(flags), "extraHistoryEntries": extra_entries,
                                       "failures": [repr(f) for f in failures][:3]})
        assert not failures, failures
        assert [r for r in results if isinstance(r, int)] == [200, 200] and slow
        assert sorted(per_user) == sorted(uid(n) for n in range(1, 21)) and set(per_user.values()) == {1}
        assert not bad, bad
        assert all(f["passkeys"][0]["aaGuid"] == YUBI for f in flags)


def _detections(flag: dict[str, Any]) -> int:
    return sum(1 for h in flag.get("history") or [] if h["note"].startswith("UPN changed"))


def _details_read(flag: dict[str, Any]) -> int:
    return sum(1 for h in flag.get("history") or [] if h["note"].startswith("passkey details read"))


async def processor_call(processor: Any, body: bytes) -> None:
    """Call the queue function as the host would, with one message."""
    from azure.functions.queue import QueueMessage

    await processor(QueueMessage(id="race", body=body, dequeue_count=1, pop_receipt="x"))
