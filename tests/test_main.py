"""The command line as an administrator runs it: `python -m shared ...` as a process against the local stack,
judged by its exit code and what it prints (issue 11: a plan that needs a person exited 0)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.stack import YUBI, running_stack
from tests.e2e.test_cli import cli_env
from tests.e2e.test_policy_e2e import MARKETING, doc_with, legacy_tenant
from tests.sign_in import install_fake_az

ROOT = Path(__file__).resolve().parents[1]


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run `python -m shared ARGS`; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shared", *args, cwd=ROOT, env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_plan_exit_codes_say_whether_a_person_is_needed(azurite, tmp_path):
    """`plan` exits 0 with nothing to accept, 1 when the plan would lock users out (it asks for acceptance),
    and 1 when the plan has errors (it says so and does not ask for acceptance, which cannot help)."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        env = cli_env(stack, azurite.connection_string)
        cases = {
            "plain": (doc_with(), 0, "Plan ", None),
            "lockout": (doc_with(passkeyMethod__keyRestrictions__remove=[YUBI]), 1,
                        "requires explicit acceptance", None),
            "errors": (doc_with(passkeyMethod__includeTargets=[MARKETING]), 1, "cannot be applied",
                       "requires explicit acceptance"),
        }
        for name, (doc, code, says, never) in cases.items():
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(doc))
            got, out, err = await run_cli(env, "plan", "--document", str(path))
            assert got == code, (name, got, out, err)
            assert says in out, (name, out)
            if never:
                assert never not in out, (name, out)
            got_json, out_json, _ = await run_cli(env, "plan", "--json", "--document", str(path))
            assert got_json == code and json.loads(out_json)["planId"], name
        assert stack.sim.stats()["writes"] == 0


async def test_refusals_and_unknown_ids_are_not_reported_as_outages(azurite, tmp_path):
    """An unknown plan or run id is bad input (2); a stale or already-applied plan is a refusal (1). Exit 3
    ("Graph or storage failed") would make a script retry them."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        env = cli_env(stack, azurite.connection_string)
        code, _, err = await run_cli(env, "apply", "--plan-id", "no-such-plan")
        assert code == 2 and "no-such-plan" in err, err
        code, _, err = await run_cli(env, "rollback", "no-such-run")
        assert code == 2, err
        path = tmp_path / "doc.json"
        path.write_text(json.dumps(doc_with()))
        _, out, _ = await run_cli(env, "plan", "--json", "--document", str(path))
        plan_id = json.loads(out)["planId"]
        code, _, err = await run_cli(env, "apply", "--plan-id", plan_id)
        assert code == 0, err
        code, _, err = await run_cli(env, "apply", "--plan-id", plan_id)
        assert code == 1 and "Traceback" not in err, err


async def test_malformed_storage_setting_is_named_without_a_traceback(azurite):
    """A malformed STATE_STORAGE is a settings error (2) that names the setting, not a traceback."""
    async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
        env = cli_env(stack, "not a connection string")
        code, _, err = await run_cli(env, "runs")
        assert code == 2 and "STATE_STORAGE" in err and "Traceback" not in err, err


def test_a_closed_pipe_ends_quietly() -> None:
    """`python -m shared flags | head` closes the pipe early: the CLI stops without a traceback."""
    from shared.__main__ import emit

    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    with open(write_fd, "w", closefd=True) as broken:
        assert emit("x" * 200_000, stream=broken) is False


def test_a_failed_sign_in_says_so_and_suggests_az_login() -> None:
    """A credential that cannot get a token is reported as a sign-in failure with `az login`, never as
    "Graph did not answer"."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import CredentialUnavailableError

    from shared.errors import GraphSignInFailed
    from shared.graph.gateway import GraphGateway

    for exc in (CredentialUnavailableError("DefaultAzureCredential failed"), ClientAuthenticationError("AADSTS700016")):
        mapped = GraphGateway._map_error(GraphGateway.__new__(GraphGateway), exc, "reading the FIDO2 policy")
        assert isinstance(mapped, GraphSignInFailed), mapped
        assert "az login" in mapped.message and "did not answer" not in mapped.message


async def test_the_cli_reaches_identity_based_storage_with_the_administrators_sign_in(azurite, tmp_path):
    """With the deployed app's identity-based storage settings (and its AZURE_CLIENT_ID copied along), the CLI
    signs in as the administrator (`az login`), not as the app's managed identity, which their machine lacks."""
    from devhost.azurite import start_azurite

    secured = await asyncio.to_thread(start_azurite, oauth=True)
    try:
        async with running_stack(azurite, legacy_tenant(), drain=False) as stack:
            bin_dir = tmp_path / "bin"
            log = install_fake_az(bin_dir)
            env = cli_env(stack, "")
            env.pop("STATE_STORAGE")
            env.update({"STATE_STORAGE__tableServiceUri": secured.table_url,
                        "STATE_STORAGE__queueServiceUri": secured.queue_url,
                        "STATE_STORAGE__clientId": "11111111-2222-3333-4444-555555555555",
                        "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
                        "SSL_CERT_FILE": str(secured.cert_path), "PATH": f"{bin_dir}:{env['PATH']}"})
            code, out, err = await run_cli(env, "runs", "--json")
            assert code == 0, err
            assert json.loads(out)["value"] == []
            assert "https://storage.azure.com" in log.read_text()
    finally:
        await asyncio.to_thread(secured.stop)


def test_every_subcommand_runs_its_own_function() -> None:
    """Each subcommand the parser offers has exactly one function in COMMANDS, so none falls through to another."""
    from shared.__main__ import COMMANDS, _parser

    sub = next(a for a in _parser()._actions if a.dest == "command")
    assert set(sub.choices or ()) == set(COMMANDS)


def _paged_tenant(users: int = 30, page: int = 5) -> dict:
    from tests.e2e.stack import tenant, user

    doc = tenant([user(n) for n in range(1, users + 1)])
    doc["simulator"]["delta_page_size"] = page
    return doc


async def test_runs_show_a_sweeps_progress_and_one_run_by_id(azurite, functions):
    """`sweep` in a pipe draws no bar (stderr stays empty); `runs` lists the sweep with where it ended,
    `runs --json` carries the progress with its percent, and `runs RUN_ID` shows that run alone, as
    GET /api/runs/{runId} does."""
    from tests import payloads
    from tests.e2e.stack import ADMIN_PRINCIPAL
    from tests.e2e.test_cli import cli_env

    async with running_stack(azurite, _paged_tenant(), drain=False) as stack:
        env = cli_env(stack, azurite.connection_string)
        code, out, err = await run_cli(env, "sweep", "--json")
        assert code == 0 and err == "", err  # not a terminal: not a character of a bar
        run_id = json.loads(out)["runId"]
        code, out, _ = await run_cli(env, "runs")
        line = next(ln for ln in out.splitlines() if run_id in ln)
        assert "sweep" in line and "complete" in line and "[seeding 30/30 users (100%)" in line, line
        assert "ETA" not in line  # a finished run has none
        code, out, _ = await run_cli(env, "runs", "--json")
        listed = next(r for r in json.loads(out)["value"] if r["runId"] == run_id)
        assert listed["progress"]["percent"] == 100.0 and listed["progress"]["total"] == 30
        code, out, _ = await run_cli(env, "runs", run_id)
        assert code == 0 and out.startswith(f"run {run_id}: sweep complete (done)"), out
        assert "progress: seeding 30/30 users (100%)" in out and "pages=6 users=30" in out, out
        code, out, _ = await run_cli(env, "runs", run_id, "--json")
        shown = json.loads(out)
        answer = await functions["run_get"].get_user_function()(payloads.http_request(
            "GET", f"https://guard.example/api/runs/{run_id}", route_params={"runId": run_id},
            headers={"X-MS-CLIENT-PRINCIPAL": ADMIN_PRINCIPAL}))
        assert answer.status_code == 200 and json.loads(answer.get_body()) == shown
        assert shown["status"] == "done" and shown["progress"]["done"] == 30
        code, _, err = await run_cli(env, "runs", "0" * 32)
        assert code == 2 and "not found" in err, err


async def test_sweep_on_a_terminal_draws_a_bar_page_by_page(azurite):
    """With stderr a terminal (a pseudo-terminal here), `sweep` redraws one bar line per page on stderr and
    ends it; stdout carries only the result."""
    import pty

    async with running_stack(azurite, _paged_tenant(), drain=False) as stack:
        from tests.e2e.test_cli import cli_env

        master, slave = pty.openpty()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "shared", "sweep", cwd=ROOT, env=cli_env(stack, azurite.connection_string),
                stdout=subprocess.PIPE, stderr=slave)
            os.close(slave)
            out, _ = await proc.communicate()
            drawn = b""
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the terminal's other end is closed and everything was read
                    break
                if not chunk:
                    break
                drawn += chunk
        finally:
            os.close(master)
        assert proc.returncode == 0
        text = drawn.decode()
        frames = [f for f in text.split("\r") if f.startswith("[")]
        assert len(frames) >= 6, text  # the start, then each of the 6 pages
        assert "seeding 30/30 users (100%)" in frames[-1] and "#" * 24 in frames[-1], text
        assert text.rstrip("\r\n").endswith("\x1b[K"), text  # the line was ended once, after the last frame
        assert "\r" not in out.decode() and "runId=" in out.decode()


async def test_holders_shows_the_index_and_refreshes_it(azurite):
    """`holders` on a fresh tenant: never built (0). `holders --refresh --json`: the report read and the index
    built, its meta shown; again: current, one report request. Without AuditLog.Read.All: skipped, exit 0."""
    from devhost.graph_tokens import unsigned_jwt
    from tests.e2e.test_cli import cli_env
    from tests.graph.test_registrations import holders_tenant

    async with running_stack(azurite, holders_tenant(), drain=False) as stack:
        env = cli_env(stack, azurite.connection_string)
        code, out, err = await run_cli(env, "holders")
        assert code == 0 and "holders index: never built" in out, (out, err)
        code, out, err = await run_cli(env, "holders", "--refresh", "--json")
        shown = json.loads(out)
        assert code == 0 and shown["refresh"]["current"] is False and shown["refresh"]["added"] == 4, (out, err)
        assert shown["index"]["count"] == 4 and shown["index"]["reportRefreshedAt"] == shown["refresh"][
            "reportRefreshedAt"]
        stack.sim.reset_stats()
        code, out, err = await run_cli(env, "holders", "--refresh")
        assert code == 0 and "refresh: current=True" in out and "holders index: 4 holder(s)" in out, (out, err)
        assert stack.sim.stats()["calls"]["by_route"].get(
            "GET /reports/authenticationMethods/userRegistrationDetails") == 1
        scopes = "Organization.Read.All User.Read.All"
        env["GRAPH_DEV_TOKEN"] = unsigned_jwt({"aud": "https://graph.microsoft.com", "tid": stack.tenant_id,
                                                "idtyp": "user", "upn": "admin@devhost.invalid", "scp": scopes})
        code, out, err = await run_cli(env, "holders", "--refresh", "--json")
        assert code == 0 and json.loads(out)["refresh"] == {"skipped": "AuditLog.Read.All not granted"}, (out, err)
        assert "AuditLog.Read.All" in err  # the warning
