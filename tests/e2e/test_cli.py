"""The command line as an administrator runs it: `python -m shared ...` against the Graph simulator and Azurite.

A UPN check from a terminal: `sweep --process` reads users/delta, queues the changes and drains the queue with
the queue trigger's own processor, so `flags` shows the result without a deployed app. `process-queue` drains
what is already queued. `verify --document` names every problem of a bad document.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.storage.queue import BinaryBase64DecodePolicy, BinaryBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from devhost.graph_tokens import admin_token
from shared.config import QUEUE_NAME
from shared.upn.decide import holder_flag
from shared.upn.messages import send_messages, users_message
from tests.e2e.stack import YUBI, running_stack, tenant, uid, user
from tests.reliability.helpers import clear_queue, poison_count

ROOT = Path(__file__).resolve().parents[2]


def cli_env(stack: Any, connection_string: str) -> dict[str, str]:
    """The environment an administrator's shell has: the app's settings, pointing at this stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAPH_", "STATE_", "NOTIFICATION_", "TICKET_"))}
    env.update({"TENANT_ID": stack.tenant_id, "GRAPH_BASE_URL": stack.sim.base_url,
                "GRAPH_DEV_TOKEN": admin_token(stack.tenant_id),
                "STATE_STORAGE": connection_string, "PYTHONDONTWRITEBYTECODE": "1"})
    return env


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m shared ARGS` from the repo root, as an administrator would; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shared", *args, cwd=ROOT, env=env,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=600)
    return subprocess.CompletedProcess(list(args), int(proc.returncode or 0), out.decode(), err.decode())


def rename(stack: Any, *numbers: int) -> None:
    """Rename users in the simulator the way an admin centre would (no notification: only the sweep sees it)."""
    stack.sim.control("POST", "users/bulk_rename", {"notify": False, "users": [
        {"id": uid(n), "userPrincipalName": f"user{n}@fabrikam.example"} for n in numbers]})


async def queue_length(connection_string: str, name: str = QUEUE_NAME) -> int:
    """Messages in a queue, visible or not."""
    async with QueueClient.from_connection_string(connection_string, name) as client:
        return int((await client.get_queue_properties()).approximate_message_count or 0)


async def test_sweep_process_finishes_a_upn_check_from_the_shell(azurite):
    """Seed with `sweep --process`, rename in Graph, `sweep --process` flags the renamed passkey holder, and
    `flags` lists the flag; the queue is empty afterwards."""
    users = [user(1), user(2, key=None), user(3)]
    async with running_stack(azurite, tenant(users), drain=False) as stack:
        conn = azurite.connection_string
        await clear_queue(conn)
        env = cli_env(stack, conn)
        seeded = await cli(env, "sweep", "--process")
        assert seeded.returncode == 0, seeded.stderr
        assert "seeded=True" in seeded.stdout
        rename(stack, 1, 2)
        run = await cli(env, "sweep", "--process")
        assert run.returncode == 0, run.stderr
        assert "flagged 1 user" in run.stdout, run.stdout
        listed = await cli(env, "flags")
        assert listed.returncode == 0, listed.stderr
        lines = listed.stdout.strip().splitlines()
        assert len(lines) == 1 and uid(1) in lines[0], listed.stdout
        assert "user1@contoso.example -> user1@fabrikam.example" in lines[0]
        assert await queue_length(conn) == 0
        flag = await stack.flag(uid(1))
        assert flag is not None and [p["aaGuid"] for p in flag["passkeys"]] == [YUBI]
        assert "(1 passkey(s), since" in lines[0]
        await stack.services.store.flags.create([holder_flag(uid(3), "user3@fabrikam.example", "user3@contoso.example",
                                                             source="sweep", detected_at=datetime.now(UTC))])
        listed = await cli(env, "flags", "--status", "pending")
        pending = [line for line in listed.stdout.splitlines() if uid(3) in line]
        assert len(pending) == 1 and "(0 passkey(s) so far, details pending, since" in pending[0], listed.stdout


async def test_sweep_process_json_reports_the_sweep_and_the_queue(azurite):
    """`sweep --process --json` carries the sweep's result and the drain's counts (flagged user ids)."""
    async with running_stack(azurite, tenant([user(1), user(2)]), drain=False) as stack:
        conn = azurite.connection_string
        await clear_queue(conn)
        env = cli_env(stack, conn)
        assert (await cli(env, "sweep", "--process")).returncode == 0
        rename(stack, 2)
        run = await cli(env, "sweep", "--process", "--json")
        assert run.returncode == 0, run.stderr
        body = json.loads(run.stdout)
        assert body["sweep"]["messagesQueued"] >= 1
        assert body["queue"]["flagged"] == [uid(2)]
        assert body["queue"]["poisoned"] == 0 and body["queue"]["remaining"] == 0


async def test_process_queue_drains_what_is_already_queued(azurite):
    """Messages queued earlier (by webhooks or a sweep without --process) are processed by `process-queue`,
    including one hidden for a while (a throttled message re-queued with Retry-After)."""
    async with running_stack(azurite, tenant([user(1), user(2)]), drain=False) as stack:
        conn = azurite.connection_string
        await clear_queue(conn)
        env = cli_env(stack, conn)
        assert (await cli(env, "sweep", "--process")).returncode == 0
        rename(stack, 1, 2)
        await send_messages(stack.services, [users_message([{"id": uid(1)}], source="notification")])
        await send_messages(stack.services, [users_message([{"id": uid(2)}], source="notification")], delay=2)
        run = await cli(env, "process-queue")
        assert run.returncode == 0, run.stderr
        assert "flagged 2 user" in run.stdout, run.stdout
        assert {f["userId"] for f in await stack.all_flags()} == {uid(1), uid(2)}
        assert await queue_length(conn) == 0


async def test_an_unreadable_message_goes_to_the_poison_queue(azurite):
    """A message that can never be processed (not JSON) is moved to upn-changes-poison at once, the good one is
    processed, and the command exits 3 naming the poisoned message."""
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        conn = azurite.connection_string
        await clear_queue(conn)
        env = cli_env(stack, conn)
        assert (await cli(env, "sweep", "--process")).returncode == 0
        rename(stack, 1)
        async with QueueClient.from_connection_string(conn, QUEUE_NAME,
                                                      message_encode_policy=BinaryBase64EncodePolicy(),
                                                      message_decode_policy=BinaryBase64DecodePolicy()) as client:
            await client.send_message(b"not json at all")
        await send_messages(stack.services, [users_message([{"id": uid(1)}], source="notification")])
        run = await cli(env, "process-queue")
        assert run.returncode == 3, (run.stdout, run.stderr)
        assert "1 moved to the poison queue" in run.stdout, run.stdout
        assert await poison_count(conn) == 1
        assert await queue_length(conn) == 0
        assert await stack.flag(uid(1)) is not None


async def test_verify_lists_every_problem_of_a_document(azurite, tmp_path):
    """A document with three mistakes: text mode prints all three and exits 2; --json carries the same list."""
    document = json.loads((ROOT / "policy" / "desired-state.json").read_text())
    document["passkeyMethod"]["state"] = "on"
    document["authenticationStrength"]["displayName"] = ""
    document["colour"] = "blue"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    async with running_stack(azurite, tenant([user(1)]), drain=False) as stack:
        env = cli_env(stack, azurite.connection_string)
        text = await cli(env, "verify", "--document", str(bad))
        assert text.returncode == 2, text.stderr
        for field in ("passkeyMethod.state", "authenticationStrength.displayName", "colour"):
            assert f"  {field}: " in text.stderr, text.stderr
        as_json = await cli(env, "verify", "--document", str(bad), "--json")
        assert as_json.returncode == 2
        detail = json.loads(as_json.stdout)["error"]["detail"]
        assert sorted(d["field"] for d in detail) == ["authenticationStrength.displayName", "colour",
                                                     "passkeyMethod.state"]
