"""Azurite stopped and started again on the same ports while a sweep and the queue processors run:
every run completes or fails with our StateError and a clear message, nothing is corrupted, and the
re-runs end with flags and snapshots that match the simulator's ground truth.

Azurite with `--location` saves its databases every 5 s (LokiJS autosave) and on a graceful stop, so a
SIGKILL loses the writes of the last few seconds, writes it had acknowledged. Azure Storage never does
that, so a lost write there is not a fault of ours to survive. The test therefore uses both ways in:
`restart()` (SIGTERM, data saved) at random points with writes in flight, and `kill()` (SIGKILL) at a
moment when Azurite has saved everything, the runs being held on Graph; Graph is released only after the
kill and storage comes back only once the sweep has met the dead endpoint.

Every step waits on what it needs, never on a fixed time: Graph is held (`graph_paused`) rather than slowed
for a set time, the kill waits until a run is held and the table database has gone two autosave periods
without a save (every acknowledged write is on disk), and the restart waits for the sweep's failure.
"""
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from devhost.azurite import Azurite, start_azurite
from shared.errors import PasskeyGuardError, StateError
from shared.policy.runs import list_runs
from shared.policy.verify import verify
from shared.upn.sweep import sweep
from tests.e2e.stack import YUBI, running_stack, tenant, user
from tests.reliability.helpers import drain, judge, poison_count, raw_snapshots
from tests.reliability.summary import record, soak_factor

AUTOSAVE_SECONDS = 5.0  # Azurite's LokiJS autosave interval
PAGE_MS = 120.0          # Graph latency: a sweep of ~20 pages takes a few seconds
WITHIN = 180.0           # bounds a wait that fails; never reached when things work
TABLE_DB = "__azurite_db_table__.json"  # what LokiJS autosave rewrites under `--location`


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll `condition` until it holds; WITHIN seconds only bound a failure, which names `what`."""
    deadline = time.monotonic() + WITHIN
    while not await condition():
        assert time.monotonic() < deadline, f"not within {WITHIN} s: {what}"
        await asyncio.sleep(0.05)


def saved_at(az: Azurite) -> float:
    """When Azurite last wrote its table database to disk (0 before the first save)."""
    assert az.location is not None
    try:
        return (az.location / TABLE_DB).stat().st_mtime
    except FileNotFoundError:
        return 0.0


@pytest.fixture
def persistent_azurite(tmp_path: Path) -> Iterator[Azurite]:
    """A private Azurite that keeps its data on disk, so a restart on the same ports finds it again."""
    instance = start_azurite(location=tmp_path / "azurite-data", workdir=tmp_path / "azurite-work")
    try:
        yield instance
    finally:
        instance.stop()


async def _positive(count: Awaitable[int]) -> bool:
    return await count > 0


def clear_state_error(exc: BaseException) -> bool:
    """Our StateError, naming what it was doing, with no SDK text or stack in the message."""
    return isinstance(exc, StateError) and " while " in exc.message and "Traceback" not in exc.message


class Sweeper:
    """The sweep timer: runs the sweep again after each failure until a run completes."""

    def __init__(self, services: object) -> None:
        self.services = services
        self.outcomes: list[str] = []
        self.done = False
        self.unclear: list[str] = []

    async def run(self, attempts: int = 40) -> None:
        try:
            for _ in range(attempts):
                try:
                    if (await sweep(self.services, trigger="timer"))["complete"]:  # type: ignore[arg-type]
                        self.outcomes.append("completed")
                        return
                    self.outcomes.append("partial")
                except PasskeyGuardError as exc:
                    self.outcomes.append(exc.code)
                    if not clear_state_error(exc):
                        self.unclear.append(f"{type(exc).__name__}: {exc.message}")
                    await asyncio.sleep(0.3)
        finally:
            self.done = True


async def test_azurite_restarted_and_killed_during_a_sweep_and_processing(persistent_azurite, processor, slow_lane):
    """Storage restarts twice at random points and is SIGKILLed once while a sweep and the processors
    run side by side: runs complete or fail clearly, and the end state is exactly the ground truth."""
    count = 160 * soak_factor()
    users = [user(n, key=YUBI if n % 2 else None) for n in range(1, count + 1)]
    doc = tenant(users)
    doc["simulator"].update(delta_page_size=8)  # a sweep of ~20 pages, long enough to be hit
    az = persistent_azurite
    rng = random.Random(20261125)
    outages: dict[str, int] = {"restart": 0, "kill": 0, "sweepRunningAtKill": 0}
    async with running_stack(az, doc, drain=False) as stack:
        conn = az.connection_string
        assert (await sweep(stack.services))["seeded"]
        original = {u["id"]: u["userPrincipalName"] for u in users}
        stack.sim.control("POST", "users/bulk_rename", {"from_domain": "contoso.example",
                                                        "to_domain": "fabrikam.example", "notify": False})
        sweeper = Sweeper(stack.services)
        stack.sim.configure(latency_ms=PAGE_MS)
        stack.sim.reset_stats()

        async def stat(name: str) -> int:
            return int((await asyncio.to_thread(stack.sim.stats))[name])

        async def pages_read(at_least: int) -> None:
            async def enough() -> bool:
                return await stat("delta_pages") >= at_least
            await wait_until(enough, f"{at_least} delta pages read")

        async def table_db_quiet() -> bool:
            """Two autosave periods without a table save: nothing was dirty, every acknowledged write is on
            disk (a busy machine only makes this wait longer)."""
            return time.time() - saved_at(az) > 2 * AUTOSAVE_SECONDS

        async def sweep_met_dead_storage(failures: int) -> bool:
            return sweeper.done or len(sweeper.outcomes) > failures

        async def outages_during_the_run() -> None:
            pages = sorted(rng.sample(range(3, 12), 2))
            for at in pages:  # graceful restarts at random points of the sweep: writes in flight, data kept
                await pages_read(at)
                await asyncio.to_thread(az.restart)
                outages["restart"] += 1
            # A SIGKILL once everything is saved: hold Graph until a run waits on it and the table database
            # has gone quiet and saved, kill, release Graph, and stay down until the sweep has met the dead
            # endpoint (past the SDKs' retries), so the runs' next writes fail.
            await pages_read(pages[-1] + 2)
            stack.sim.configure(graph_paused=True)
            await wait_until(lambda: _positive(stat("graph_held")), "a run held on Graph")
            await wait_until(table_db_quiet, "Azurite's table database saved and quiet")
            await asyncio.to_thread(az.kill)
            outages["kill"] += 1
            outages["sweepRunningAtKill"] = int(not sweeper.done)
            failures = len(sweeper.outcomes)
            stack.sim.configure(graph_paused=False)
            await wait_until(lambda: sweep_met_dead_storage(failures), "the sweep failing on dead storage")
            await asyncio.to_thread(az.restart)

        chaos = asyncio.create_task(outages_during_the_run())
        running = asyncio.create_task(sweeper.run())
        drained = await drain(conn, processor, slow_lane=slow_lane, visibility=4, within=120,
                              until=lambda: sweeper.done and chaos.done())
        await asyncio.gather(chaos, running)
        drained_after = await drain(conn, processor, slow_lane=slow_lane, visibility=4, within=60)

        # Nothing is corrupted: every table reads back, the state matches the ground truth.
        report = await verify(stack.services, trigger="test")
        runs = await list_runs(stack.services, limit=5)
        verdict = await judge(conn, stack.tenant_id, stack.sim, original)
        poisoned = await poison_count(conn)
        lost = verdict.lost + poisoned
        errors = {**drained.errors, **drained_after.errors}
        # Runs as they happened: each sweep attempt and each delivery. Those that failed with our clear error and
        # were run again are apart; an unclear failure, or a completed run whose end state is wrong, did not survive.
        sweep_failed = [o for o in sweeper.outcomes if o not in ("completed", "partial")]
        clean = len(sweep_failed) - len(sweeper.unclear) + drained.clean_failed + drained_after.clean_failed
        completed = len(sweeper.outcomes) - len(sweep_failed) + drained.delivered + drained_after.delivered
        record("azurite_restart", area="azurite", faults={"azurite_kill": outages["kill"], "azurite_restart":
                                                                 outages["restart"]},
               runs=len(sweeper.outcomes) + drained.delivered + drained.failed + drained_after.delivered
               + drained_after.failed, failed=clean, survived=completed if lost == 0 else 0, data_lost=lost,
               detail={"users": count, "expectedFlags": len(verdict.expected), "outages": outages,
                       "sweepOutcomes": sweeper.outcomes, "deliveries": drained.delivered + drained_after.delivered,
                       "failedDeliveries": drained.failed + drained_after.failed, "processorErrors": errors,
                       "poisoned": poisoned})
        assert outages == {"restart": 2, "kill": 1, "sweepRunningAtKill": 1}  # the kill hit a running sweep
        assert sweeper.outcomes[-1] == "completed" and not sweeper.unclear, (sweeper.outcomes, sweeper.unclear)
        assert set(errors) <= {"stateUnavailable", "stateError", "concurrency"}, errors
        assert report["runId"] and runs["value"]
        assert poisoned == 0
        assert verdict.lost == 0, verdict.explain()
        assert len(verdict.expected) == count // 2


async def test_a_storage_outage_longer_than_the_retries_is_a_clear_state_error(persistent_azurite):
    """With storage gone for good, a run fails with our StateError naming the operation, never with an SDK
    exception or a stack trace; once storage is back, the same run works and finds its data."""
    doc = tenant([user(n) for n in range(1, 11)])
    az = persistent_azurite
    async with running_stack(az, doc, drain=False) as stack:
        await sweep(stack.services)
        await asyncio.to_thread(az.stop)  # graceful: what was written is kept (see the module docstring)
        outages = 1
        started = time.monotonic()
        with pytest.raises(PasskeyGuardError) as failed:
            await sweep(stack.services)
        outcomes = [failed.value.code]
        waited = time.monotonic() - started
        await asyncio.to_thread(az.start)
        stored = await raw_snapshots(az.connection_string, stack.tenant_id)
        snapshots = sum(len(upns) for upns in stored.values())
        again = await sweep(stack.services)
        outcomes.append("completed" if again["complete"] else "partial")
        # The run on dead storage is apart when it failed with our clear error; the run after it survived when it
        # completed and every snapshot written before the outage is there.
        record("azurite_down", area="azurite", faults={"azurite_kill": outages}, runs=len(outcomes),
               failed=int(clear_state_error(failed.value)),
               survived=int(again["complete"] and snapshots == 10), data_lost=abs(10 - snapshots),
               detail={"outcomes": outcomes, "message": failed.value.message,
                       "secondsToFail": round(waited, 1)})
        assert clear_state_error(failed.value), (type(failed.value).__name__, failed.value.message)
        assert "storage unreachable while" in failed.value.message
        assert snapshots == 10 and again["complete"] and not again["seeded"]
