"""The command line as an administrator runs it: `python -m shared ...` as a process against the local stack,
judged by its exit code and what it prints (issue 11: a plan that needs a person exited 0)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.stack import running_stack
from tests.e2e.test_policy_e2e import MARKETING, YUBI, doc_with, legacy_tenant

ROOT = Path(__file__).resolve().parents[1]


def cli_env(stack: Any, connection_string: str) -> dict[str, str]:
    """The environment an administrator's shell would have, pointing at this stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAPH_", "STATE_", "NOTIFICATION_", "TICKET_"))}
    env.update({"TENANT_ID": stack.tenant_id, "GRAPH_BASE_URL": stack.sim.base_url, "GRAPH_DEV_TOKEN": "test-token",
                "STATE_STORAGE": connection_string, "PYTHONDONTWRITEBYTECODE": "1"})
    return env


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
