"""Run records say who acted: the trigger, and the administrator, the Entra principal or the app.

The CLI runs as a process with a Graph token shaped like an administrator's (an unsigned JWT with `upn` and
`oid`); HTTP goes through devhost with the principal App Service would pass on; the timer is the app's own run.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.policy.scheduled import scheduled_run
from tests.e2e.stack import running_stack
from tests.e2e.test_cli import cli, cli_env
from tests.e2e.test_permissions_e2e import ENFORCE
from tests.e2e.test_policy_jobs_e2e import document, legacy_tenant, outcome, policy_file, post, run_rows
from tests.graph.test_permissions import unsigned_jwt

ADMIN_UPN, ADMIN_OID = "alex.admin@contoso.example", "5f0c3d1e-0000-4000-8000-00000000a11e"
HTTP_ADMIN, HTTP_OID = "admin@contoso.example", "00000000-0000-4000-8000-000000000001"


def admin_token(tenant_id: str) -> str:
    """The delegated Graph token `az login` would give an administrator (unsigned: only claims are read)."""
    return unsigned_jwt({"aud": "https://graph.microsoft.com", "tid": tenant_id, "idtyp": "user",
                         "upn": ADMIN_UPN, "oid": ADMIN_OID, "scp": " ".join(ENFORCE)})


def write_document(tmp_path: Path) -> str:
    return policy_file(tmp_path, document())


async def test_a_cli_apply_records_the_signed_in_administrator_not_the_apps_mode(azurite, tmp_path):
    """`apply --document` in audit mode records trigger cli and the token's upn/oid; `runs` never says audit."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="audit") as stack:
        env = {**cli_env(stack, azurite.connection_string), "ENFORCEMENT_MODE": "audit"}
        env["GRAPH_DEV_TOKEN"] = token = admin_token(stack.tenant_id)
        applied = await cli(env, "apply", "--document", write_document(tmp_path), "--json")
        assert applied.returncode == 0, applied.stderr
        run_id = json.loads(applied.stdout)["runId"]
        [row] = [r for r in await run_rows(stack) if r["id"] == run_id]
        assert row["result"] == "applied" and row["trigger"] == "cli"
        assert row["actor"] == {"name": ADMIN_UPN, "objectId": ADMIN_OID}
        assert "mode" not in row
        assert token not in json.dumps(row, default=str)
        listed = await cli(env, "runs")
        assert listed.returncode == 0, listed.stderr
        line = next(ln for ln in listed.stdout.splitlines() if run_id in ln)
        assert "cli" in line and ADMIN_UPN in line and "audit" not in line, line
        as_json = await cli(env, "runs", "--json")
        first = next(r for r in json.loads(as_json.stdout)["value"] if r["runId"] == run_id)
        assert first["trigger"] == "cli" and first["actor"]["name"] == ADMIN_UPN


async def test_a_cli_run_against_the_simulator_with_an_opaque_token_names_the_local_developer(azurite, tmp_path):
    """An opaque dev token names no one: the run says a local developer acted with the dev token."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        env = {**cli_env(stack, azurite.connection_string), "GRAPH_DEV_TOKEN": "local-dev-token"}
        checked = await cli(env, "verify", "--document", write_document(tmp_path), "--json")
        assert checked.returncode in (0, 1), checked.stderr
        [row] = [r for r in await run_rows(stack) if r["id"] == json.loads(checked.stdout)["runId"]]
        assert row["trigger"] == "cli" and row["actor"] == {"name": "local developer (dev token)"}


async def test_http_plan_and_apply_jobs_record_the_entra_principal(azurite, tmp_path):
    """The plan job, the apply job and a verification over HTTP record trigger http and the caller's name."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="enforce",
                             POLICY_FILE=write_document(tmp_path)) as stack:
        status, answer, _ = await post(stack, "policy/plan", b"")
        assert status == 202, answer
        planned = await outcome(stack, answer["runId"])
        status, answer, _ = await post(stack, "policy/apply", {"planId": planned["planId"]})
        assert status == 202, answer
        applied = await outcome(stack, answer["runId"])
        assert applied["result"] == "applied", applied
        status, verified, _ = await post(stack, "policy/verify", b"")
        assert status == 200, verified
        expected = {"name": HTTP_ADMIN, "objectId": HTTP_OID}
        for run in (planned, applied):
            assert run["trigger"] == "http" and run["actor"] == expected, run
            assert "mode" not in run
        rows = {r["id"]: r for r in await run_rows(stack)}
        assert rows[verified["runId"]]["actor"] == expected and rows[verified["runId"]]["trigger"] == "http"
        status, text, _ = await stack.get("runs")
        assert status == 200
        listed: list[dict[str, Any]] = json.loads(text)["value"]
        assert {r["runId"]: r["actor"]["name"] for r in listed} == {
            planned["runId"]: HTTP_ADMIN, applied["runId"]: HTTP_ADMIN, verified["runId"]: HTTP_ADMIN}


async def test_a_timer_run_records_the_app_and_its_mode(azurite, tmp_path):
    """The audit-mode timer's verification is the app's own run: actor the app, mode audit."""
    async with running_stack(azurite, legacy_tenant(), drain=False, ENFORCEMENT_MODE="audit",
                             POLICY_FILE=write_document(tmp_path)) as stack:
        result = await scheduled_run(stack.services)
        [row] = [r for r in await run_rows(stack) if r["id"] == result["runId"]]
        assert row["trigger"] == "timer" and row["actor"] == {"name": "the app"} and row["mode"] == "audit"
