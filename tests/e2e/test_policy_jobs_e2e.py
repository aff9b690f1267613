"""Policy writes over HTTP are jobs, gated by the app's mode, by strict bodies and by named acceptances.

Every request goes through devhost (a real `func.HttpRequest`), every job through the queue trigger with a
real `QueueMessage`; the simulator's own counters are the proof that nothing was written.
"""
from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from shared.errors import ConflictError, EmergencyExclusionRefused
from shared.graph import policy_writes
from shared.policy.apply import APPLY_LEASE, apply_document
from shared.policy.scheduled import scheduled_run
from shared.services import Services, use_services
from shared.state import StateStore
from tests.conftest import make_settings
from tests.e2e.stack import ANDROID, YUBI, running_stack, tenant, uid, user

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DOC = json.loads((ROOT / "policy" / "desired-state.json").read_text())
BREAK_GLASS = "99999999-0000-4000-8000-000000000003"
PILOT = "99999999-0000-4000-8000-000000000001"
GROUPS = [{"id": gid, "displayName": name, "securityEnabled": True, "mailEnabled": False, "groupTypes": []}
          for gid, name in ((PILOT, "Passkey Pilot"), (BREAK_GLASS, "Break Glass"))]


def legacy_tenant() -> dict[str, Any]:
    doc = tenant([user(1), user(2), user(3), user(4, key=None)], groups=copy.deepcopy(GROUPS))
    doc["authenticationMethodConfigurations"]["fido2"]["isAttestationEnforced"] = True
    return doc


def document(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(DEFAULT_DOC)
    doc.pop("$schema", None)
    doc.update(changes)
    return doc


def policy_file(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "desired-state.json"
    path.write_text(json.dumps(doc))
    return str(path)


def removing_yubikey() -> dict[str, Any]:
    doc = document()
    doc["passkeyMethod"]["keyRestrictions"]["remove"] = [YUBI]
    return doc


def unexcluded_enforced_ca() -> dict[str, Any]:
    return document(conditionalAccess={"displayName": "Require Authenticator passkey", "state": "enabled",
                                       "includeGroups": [PILOT], "includeApplications": ["All"]})


async def post(stack: Any, path: str, body: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    status, text, headers = await stack.post(path, body if isinstance(body, bytes) else json.dumps(body))
    return status, (json.loads(text) if text else {}), headers


async def outcome(stack: Any, run_id: str) -> dict[str, Any]:
    """Let the host deliver the queued jobs, then read GET /api/runs/{runId}."""
    await stack.host.drain_once()
    status, text, _ = await stack.get(f"runs/{run_id}")
    assert status == 200, text
    return json.loads(text)


async def planned(stack: Any, body: Any = b"") -> dict[str, Any]:
    """POST /api/policy/plan, run the job, and return the finished run."""
    status, answer, _ = await post(stack, "policy/plan", body)
    assert status == 202, answer
    run = await outcome(stack, answer["runId"])
    assert run["result"] == "planned", run
    return run


async def run_rows(stack: Any) -> list[dict[str, Any]]:
    runs, _ = await stack.services.store.runs.page(limit=100)
    return runs


def fido2_gets(stack: Any) -> int:
    routes = stack.sim.stats()["calls"]["by_route"]
    return sum(n for route, n in routes.items()
               if route.startswith("GET ") and "authenticationMethodConfigurations" in route)


# ------------------------------------------------------------------------------------------ strict bodies
async def test_a_stray_or_mistyped_field_is_a_400_naming_it_and_nothing_is_written(azurite):
    """{"value": "x"} to plan, a boolean acceptLockout and a numeric planId are 400s naming the field;
    no run, no plan, no job and no Graph call."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce") as stack:
        stack.sim.reset_stats()
        for path, body, name in (("policy/plan", {"value": "x"}, "value"),
                                 ("policy/verify", {"value": "x"}, "value"),
                                 ("policy/apply", {"planId": "p", "acceptLockout": True}, "acceptLockout"),
                                 ("policy/apply", {"planId": 7}, "planId"),
                                 ("policy/apply", {"planId": "p", "acceptLockout": {"planId": "p", "users": "3"}},
                                  "acceptLockout.users")):
            status, answer, _ = await post(stack, path, body)
            assert status == 400 and answer["error"]["code"] == "badRequest", (path, answer)
            assert repr(name) in answer["error"]["message"], answer
        assert await run_rows(stack) == []
        assert stack.sim.stats()["calls"]["total"] == 0


# ------------------------------------------------------------------------------------------ audit mode
async def test_audit_mode_refuses_an_http_apply_and_writes_nothing(azurite, tmp_path):
    """In audit mode a plan is still made, but applying it over HTTP is a 409 auditMode: no job, no write."""
    async with running_stack(azurite, legacy_tenant(), drain=False,
                             POLICY_FILE=policy_file(tmp_path, document())) as stack:
        run = await planned(stack)
        stack.sim.reset_stats()
        status, answer, _ = await post(stack, "policy/apply", {"planId": run["planId"]})
        assert status == 409 and answer["error"]["code"] == "auditMode", answer
        assert stack.sim.stats()["writes"] == 0
        assert [r["kind"] for r in await run_rows(stack)] == ["plan"]


async def test_an_apply_job_that_reaches_an_audit_mode_app_is_refused_and_writes_nothing(azurite, tmp_path):
    """An apply queued while the app enforced, delivered after it went back to audit: refused, no write."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             POLICY_FILE=policy_file(tmp_path, document())) as stack:
        run = await planned(stack)
        status, answer, _ = await post(stack, "policy/apply", {"planId": run["planId"]})
        assert status == 202, answer
        audit = Services.from_settings(make_settings(azurite, stack.sim, stack.tenant_id, WEBSITE_AUTH_ENABLED="True",
                                                     POLICY_FILE=policy_file(tmp_path, document())))
        use_services(audit)
        try:
            stack.sim.reset_stats()
            done = await outcome(stack, answer["runId"])
        finally:
            use_services(stack.services)
            await audit.close()
        assert done["result"] == "refused" and done["error"]["code"] == "auditMode", done
        assert stack.sim.stats()["writes"] == 0


# ------------------------------------------------------------------------------------------ ad-hoc documents
async def test_an_adhoc_document_is_refused_unless_a_setting_allows_it(azurite, tmp_path):
    """A `document` in the body is a 403 naming ALLOW_ADHOC_DOCUMENTS; with the setting on it is planned."""
    async with running_stack(azurite, legacy_tenant(), drain=False,
                             POLICY_FILE=policy_file(tmp_path, document())) as stack:
        for path in ("policy/plan", "policy/verify"):
            status, answer, _ = await post(stack, path, {"document": document()})
            assert status == 403 and answer["error"]["code"] == "adhocDocumentsDisabled", answer
            assert "ALLOW_ADHOC_DOCUMENTS" in answer["error"]["message"]
        assert await run_rows(stack) == []
    async with running_stack(azurite, legacy_tenant(), drain=False, ALLOW_ADHOC_DOCUMENTS="true") as stack:
        run = await planned(stack, {"document": removing_yubikey()})
        assert run["plan"]["requiresAcceptance"] is True


# ------------------------------------------------------------------------------------------ jobs
async def test_plan_and_apply_are_jobs_with_a_run_id_to_poll(azurite, tmp_path):
    """POST plan and POST apply answer 202 with a runId and a Location; GET /api/runs/{runId} gives the
    plan id and diff, then the apply's result."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             POLICY_FILE=policy_file(tmp_path, document())) as stack:
        status, answer, headers = await post(stack, "policy/plan", b"")
        assert status == 202 and answer["status"] == "queued", answer
        assert headers["Location"].endswith(f"/api/runs/{answer['runId']}")
        status, text, _ = await stack.get(f"runs/{answer['runId']}")
        assert status == 200 and json.loads(text)["status"] == "queued"
        run = await outcome(stack, answer["runId"])
        assert run["status"] == "done" and run["kind"] == "plan" and run["planId"]
        assert run["plan"]["writes"] and stack.sim.stats()["writes"] == 0
        status, answer, headers = await post(stack, "policy/apply", {"planId": run["planId"]})
        assert status == 202 and headers["Location"].endswith(f"/api/runs/{answer['runId']}"), answer
        done = await outcome(stack, answer["runId"])
        assert done["result"] == "applied" and done["writes"], done
        assert ANDROID in stack.sim.state(users=False)["authenticationMethodConfigurations"]["fido2"][
            "keyRestrictions"]["aaGuids"]
        status, answer, _ = await post(stack, "policy/apply", {"planId": run["planId"]})
        assert status == 409 and "already applied" in answer["error"]["message"]
        status, text, _ = await stack.get("runs/" + "0" * 32)
        assert status == 404 and json.loads(text)["error"]["code"] == "notFound"
        status, text, _ = await stack.get("runs/not-a-run")
        assert status == 400 and "runId" in json.loads(text)["error"]["message"]


async def test_a_stale_plan_is_refused_before_anything_is_queued(azurite, tmp_path):
    """A plan applied after the tenant changed: 409 conflict at once, no job queued, no write."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             POLICY_FILE=policy_file(tmp_path, document())) as stack:
        run = await planned(stack)
        await stack.services.graph.send_raw("PATCH", "/policies/authenticationMethodsPolicy/"
                                            "authenticationMethodConfigurations/fido2",
                                            {"@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration",
                                             "isSelfServiceRegistrationAllowed": False})
        writes = stack.sim.stats()["writes"]
        status, answer, _ = await post(stack, "policy/apply", {"planId": run["planId"]})
        assert status == 409 and answer["error"]["code"] == "conflict", answer
        assert [r["kind"] for r in await run_rows(stack)] == ["plan"]  # a job always has its run row first
        assert stack.sim.stats()["writes"] == writes
        status, answer, _ = await post(stack, "policy/apply", {"planId": "nope"})
        assert status == 404 and answer["error"]["code"] == "notFound"


async def test_an_apply_job_delivered_twice_writes_once(azurite, tmp_path):
    """The same apply message delivered twice (at-least-once queues): Graph sees one apply's writes."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             POLICY_FILE=policy_file(tmp_path, document())) as stack:
        run = await planned(stack)
        status, answer, _ = await post(stack, "policy/apply", {"planId": run["planId"]})
        assert status == 202
        received = await stack.services.store.policy_jobs.receive(max_messages=32)
        message = next(m for m in received if m.body["runId"] == answer["runId"])
        job = stack.host.functions["policy_jobs"].get_user_function()
        stack.sim.reset_stats()
        for attempt in (1, 2):
            await job(QueueMessage(id=message.id, body=message.text.encode(), dequeue_count=attempt))
        await stack.services.store.policy_jobs.delete(message)
        status, text, _ = await stack.get(f"runs/{answer['runId']}")
        done = json.loads(text)
        assert done["result"] == "applied"
        assert stack.sim.stats()["writes"] == len(done["writes"]) > 0


# ------------------------------------------------------------------------------------------ acceptance
async def test_accepting_a_lockout_names_the_plan_and_the_exact_number_of_users(azurite, tmp_path):
    """Removing a key three users registered: no acceptance, another plan's id or a wrong count are 409s
    that state the real count; only {"planId": <this plan>, "users": 3} applies."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             POLICY_FILE=policy_file(tmp_path, removing_yubikey())) as stack:
        other = await planned(stack)
        run = await planned(stack)
        plan_id = run["planId"]
        stack.sim.reset_stats()
        status, answer, _ = await post(stack, "policy/apply", {"planId": plan_id})
        assert status == 409 and answer["error"]["code"] == "lockoutNotAccepted", answer
        assert answer["error"]["detail"]["acceptLockout"] == {"planId": plan_id, "users": 3}
        for accept in ({"planId": other["planId"], "users": 3}, {"planId": plan_id, "users": 2}):
            status, answer, _ = await post(stack, "policy/apply", {"planId": plan_id, "acceptLockout": accept})
            assert status == 409 and answer["error"]["code"] == "acceptanceMismatch", answer
            assert "3 user(s)" in answer["error"]["message"]
        assert stack.sim.stats()["writes"] == 0
        assert [r["kind"] for r in await run_rows(stack)] == ["plan", "plan"]
        status, answer, _ = await post(stack, "policy/apply",
                                       {"planId": plan_id, "acceptLockout": {"planId": plan_id, "users": 3}})
        assert status == 202, answer
        assert (await outcome(stack, answer["runId"]))["result"] == "applied"


async def test_an_apply_job_refuses_when_the_lockout_grew_after_acceptance(azurite, tmp_path):
    """A fourth user registers the key between acceptance and the job: the job refuses, nothing written."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             POLICY_FILE=policy_file(tmp_path, removing_yubikey())) as stack:
        plan_id = (await planned(stack))["planId"]
        status, answer, _ = await post(stack, "policy/apply",
                                       {"planId": plan_id, "acceptLockout": {"planId": plan_id, "users": 3}})
        assert status == 202
        stack.sim.register_passkey(uid(4), aaGuid=YUBI, displayName="Security key", model="YubiKey 5 NFC")
        stack.sim.reset_stats()
        done = await outcome(stack, answer["runId"])
        assert done["result"] == "refused" and done["error"]["code"] == "acceptanceMismatch", done
        assert "4 user(s)" in done["error"]["message"] and stack.sim.stats()["writes"] == 0


async def test_an_enforced_ca_policy_without_emergency_exclusion_needs_its_own_named_acceptance(azurite, tmp_path):
    """An `enabled` CA policy that excludes nobody: 409 until acceptNoEmergencyExclusion names the plan."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             POLICY_FILE=policy_file(tmp_path, unexcluded_enforced_ca())) as stack:
        run = await planned(stack)
        plan_id = run["planId"]
        assert run["plan"]["unexcludedEnforcedPolicies"] == ["Require Authenticator passkey"]
        lockout = {"planId": plan_id, "users": 0}
        status, answer, _ = await post(stack, "policy/apply", {"planId": plan_id, "acceptLockout": lockout})
        assert status == 409 and answer["error"]["code"] == "emergencyExclusionNotAccepted", answer
        status, answer, _ = await post(stack, "policy/apply", {"planId": plan_id, "acceptLockout": lockout,
                                                               "acceptNoEmergencyExclusion": {"planId": "other"}})
        assert status == 409 and answer["error"]["code"] == "acceptanceMismatch", answer
        assert stack.sim.stats()["writes"] == 0
        status, answer, _ = await post(stack, "policy/apply", {"planId": plan_id, "acceptLockout": lockout,
                                                               "acceptNoEmergencyExclusion": {"planId": plan_id}})
        assert status == 202, answer
        assert (await outcome(stack, answer["runId"]))["result"] == "applied"


async def test_the_cli_needs_its_own_flag_for_an_unexcluded_enforced_policy(azurite):
    """apply_document (the CLI's path) refuses the same plan without accept_no_emergency_exclusion."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        with pytest.raises(EmergencyExclusionRefused):
            await apply_document(stack.services, trigger="cli", document=unexcluded_enforced_ca(),
                                 accept_lockout=True)
        assert stack.sim.stats()["writes"] == 0
        done = await apply_document(stack.services, trigger="cli", document=unexcluded_enforced_ca(),
                                    accept_lockout=True, accept_no_emergency_exclusion=True)
        assert done["result"] == "applied"
        from shared.__main__ import _parser

        assert _parser().parse_args(["apply", "--accept-no-emergency-exclusion"]).accept_no_emergency_exclusion


# ------------------------------------------------------------------------------------------ timer and lease
async def test_the_enforce_timer_plans_once(azurite, tmp_path):
    """The enforce-mode timer reads the passkey policy twice (the plan and the read-back), not three times."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             POLICY_FILE=policy_file(tmp_path, document())) as stack:
        stack.sim.reset_stats()
        result = await scheduled_run(stack.services)
        assert result["result"] == "applied"
        assert fido2_gets(stack) == 2, stack.sim.stats()["calls"]["by_route"]


@pytest.mark.parametrize("doc", [removing_yubikey(), unexcluded_enforced_ca()], ids=["lockout", "no-exclusion"])
async def test_the_enforce_timer_leaves_a_plan_that_needs_a_person(azurite, tmp_path, doc):
    """A lockout or an enforced CA policy without emergency exclusion: the timer writes nothing to Graph, says
    why, and records a verification; its apply run, shown running while it planned, ends refused with the
    reason the timer gave rather than staying `running`."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             POLICY_FILE=policy_file(tmp_path, doc)) as stack:
        result = await scheduled_run(stack.services)
        assert result["applied"] is False and result["refused"], result
        assert stack.sim.stats()["writes"] == 0
        verified, applied = await run_rows(stack)  # newest first
        assert verified["kind"] == "verify" and applied["kind"] == "apply"
        assert applied["result"] == "refused" and [applied["error"]["message"]] == result["refused"], applied
        assert applied["trigger"] == "timer" and "writes" not in applied


async def test_an_apply_that_loses_its_lease_mid_way_writes_nothing_more(azurite, monkeypatch):
    """Another holder takes the apply lease after the first write: the apply stops before its next write."""
    doc = document(conditionalAccess={"displayName": "Require Authenticator passkey", "includeGroups": [PILOT],
                                      "excludeGroups": [BREAK_GLASS], "includeApplications": ["All"]})
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        real_send = policy_writes.send_write
        later = StateStore.from_settings(stack.services.settings,
                                         clock=lambda: datetime.now(UTC) + timedelta(hours=1))
        stolen: list[bool] = []

        async def send_then_lose_the_lease(graph: Any, write: Any, ca: Any) -> Any:
            created = await real_send(graph, write, ca)
            if not stolen:  # an hour later for the other holder: our lease looks expired to it
                stolen.append(await later.checkpoints.acquire_lease(APPLY_LEASE, "other-holder", 300))
            return created

        monkeypatch.setattr(policy_writes, "send_write", send_then_lose_the_lease)
        try:
            stack.sim.reset_stats()
            with pytest.raises(ConflictError) as lost:
                await apply_document(stack.services, trigger="cli", document=doc)
            assert stolen == [True] and lost.value.code == "leaseLost", lost.value
            assert stack.sim.stats()["writes"] == 1
            assert not await later.checkpoints.acquire_lease(APPLY_LEASE, "third-holder", 300)
        finally:
            await later.close()
