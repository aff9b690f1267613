"""A Passkey Guard process SIGKILLed at random points of a sweep (`python -m shared sweep` as a subprocess
against the simulator and Azurite), several times: the next run resumes from the checkpoint, and after
the queue is processed every renamed user with a passkey is flagged exactly once. A kill counts as mid-run
only when the stored checkpoint (read raw from Azurite) moved on between kills."""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from shared.upn.sweep import sweep
from tests.conftest import graph_token, graph_waits_move_the_clock
from tests.e2e.stack import YUBI, running_stack, tenant, uid, user
from tests.reliability.helpers import clear_queue, drain, judge, poison_count, raw_checkpoint
from tests.reliability.summary import record, soak_factor

ROOT = Path(__file__).resolve().parents[2]
KILLS = 5
WITHIN = 300.0  # bounds a run that hangs; never reached when things work


def sweep_env(stack: Any, connection_string: str) -> dict[str, str]:
    """The environment a deployed sweep would have, pointing at this stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRAPH_", "STATE_", "NOTIFICATION_", "TICKET_"))}
    env.update({"TENANT_ID": stack.tenant_id, "GRAPH_BASE_URL": stack.sim.base_url,
                "GRAPH_DEV_TOKEN": graph_token(stack.tenant_id),
                "STATE_STORAGE": connection_string, "PYTHONDONTWRITEBYTECODE": "1"})
    return env


async def run_sweep_process(env: dict[str, str], kill_when: Callable[[], Awaitable[bool]] | None,
                            ) -> tuple[str, int | None, str]:
    """Start `python -m shared sweep --json`; SIGKILL it as soon as `kill_when()` holds if it is still running
    (a point of its progress, not of the clock, so a busy machine moves the kill nowhere).

    Returns ("killed" | "exited", exit code, stderr tail)."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "shared", "sweep", "--json", cwd=ROOT, env=env,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        if kill_when is not None:
            exited = asyncio.ensure_future(proc.wait())
            while not exited.done():
                if await kill_when():
                    proc.send_signal(signal.SIGKILL)
                    _, err = await proc.communicate()
                    return "killed", proc.returncode, err.decode(errors="replace")[-2000:]
                await asyncio.wait({exited}, timeout=0.02)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=WITHIN)
        return "exited", proc.returncode, err.decode(errors="replace")[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def pages_past(sim: Any, more: int) -> Callable[[], Awaitable[bool]]:
    """A condition: the simulator has served `more` delta pages beyond what it had served when this was made."""
    target = sim.stats()["delta_pages"] + more

    async def reached() -> bool:
        return int((await asyncio.to_thread(sim.stats))["delta_pages"]) >= target
    return reached


async def test_a_sweep_killed_at_random_points_resumes_and_misses_no_one(azurite, processor, slow_lane, monkeypatch):
    """Five SIGKILLs at random moments of `python -m shared sweep`, then a run to the end: the checkpoint
    carries each run on, and processing the queue flags every renamed user with a passkey exactly once."""
    count = 300 * soak_factor()
    users = [user(n, key=YUBI if n % 3 else None) for n in range(1, count + 1)]
    doc = tenant(users)
    doc["simulator"].update(delta_page_size=6, latency_ms=40.0)  # ~40 pages: a whole run takes ~3 s
    rng = random.Random(7)
    async with running_stack(azurite, doc, drain=False) as stack:
        conn = azurite.connection_string
        await clear_queue(conn)
        assert (await sweep(stack.services))["seeded"]
        original = {u["id"]: u["userPrincipalName"] for u in users}
        renamed = [n for n in range(1, count + 1) if n % 4]
        stack.sim.control("POST", "users/bulk_rename", {"notify": False, "users": [
            {"id": uid(n), "userPrincipalName": f"user{n}@fabrikam.example"} for n in renamed]})
        env = sweep_env(stack, conn)
        stack.sim.reset_stats()
        runs: list[dict[str, Any]] = []
        kills = mid_run = 0
        last = await raw_checkpoint(conn, stack.tenant_id)
        for _ in range(KILLS * soak_factor()):
            # At a random page of the run, 8 to 11 pages in: a resumed run first re-reads the up to
            # SWEEP_HOLD_PAGES (4) pages its stored link trails by, so an earlier kill could leave the checkpoint
            # where it was; 5 runs of at most 11 pages, at most 7 of them new, cannot finish the sweep (~38 pages
            # per soak unit).
            outcome, code, err = await run_sweep_process(env, kill_when=pages_past(stack.sim, rng.randint(8, 11)))
            pages = stack.sim.stats()["delta_pages"]
            # Mid-run only when the checkpoint (read raw from storage) moved on since the previous kill and the
            # run had not finished: a kill before the first checkpoint or after the last proves nothing.
            now = await raw_checkpoint(conn, stack.tenant_id)
            advanced = bool(now and last and now.get("nextLink") and now.get("nextLink") != last.get("nextLink"))
            runs.append({"outcome": outcome, "exit": code, "pagesSoFar": pages, "checkpointAdvanced": advanced})
            kills += outcome == "killed"
            mid_run += outcome == "killed" and advanced
            last = now
            assert outcome == "killed" or code == 0, err
        started = time.monotonic()
        outcome, code, err = await run_sweep_process(env, kill_when=None)
        runs.append({"outcome": outcome, "exit": code, "pagesSoFar": stack.sim.stats()["delta_pages"]})
        checkpoint = await raw_checkpoint(conn, stack.tenant_id)
        graph_waits_move_the_clock(stack.sim, monkeypatch)  # ~225 passkey reads at Graph's 6 a second
        drained = await drain(conn, processor, slow_lane=slow_lane, within=90)
        verdict = await judge(conn, stack.tenant_id, stack.sim, original)
        poisoned = await poison_count(conn)
        lost = verdict.lost + poisoned
        total_pages = -(-len(renamed) // 6)
        record("sweep_sigkill", area="kill", faults={"sigkill": mid_run}, runs=len(runs),
               survived=len(runs) if lost == 0 else 0, data_lost=lost,
               detail={"users": count, "renamed": len(renamed), "expectedFlags": len(verdict.expected),
                       "runs": runs, "kills": kills, "midRunKills": mid_run,
                       "pagesOneRunNeeds": total_pages, "deliveries": drained.delivered,
                       "lastRunSeconds": round(time.monotonic() - started, 1)})
        assert code == 0, err
        assert kills >= 4, runs  # most runs were cut short (one may have finished first)
        assert mid_run >= 4, runs  # and most of those with the checkpoint moved on since the previous kill
        assert checkpoint and checkpoint.get("deltaLink") and not checkpoint.get("nextLink")
        assert poisoned == 0
        assert verdict.lost == 0, verdict.explain()
        assert len(verdict.expected) == len([n for n in renamed if n % 3])
