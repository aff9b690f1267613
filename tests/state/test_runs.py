"""The runs table against Azurite: round trips, newest-first paging, big payloads, missing runs."""
from __future__ import annotations

import base64
import datetime as dt
import os
from typing import Any

import pytest

from shared.errors import InputError, NotFound, PayloadTooLarge
from shared.state import StateStore


def run(run_id: str, started: dt.datetime, **extra: Any) -> dict[str, Any]:
    return {"id": run_id, "started_at": started, "trigger": "timer", "mode": "audit", **extra}


async def test_runs_round_trip_and_list_newest_first_with_paging(store: StateStore, tenant: str) -> None:
    """Runs come back equal, listed newest first, and pages chain until the token is None."""
    base = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    runs = [run(f"run-{i}", base + dt.timedelta(minutes=i), graph_calls=i, result={"ok": i % 2 == 0})
            for i in range(7)]
    for r in runs:
        await store.runs.put(r)
    assert await store.runs.get("run-3") == runs[3]
    seen: list[str] = []
    token = None
    while True:
        page, token = await store.runs.page(limit=3, page_token=token)
        seen += [r["id"] for r in page]
        if token is None:
            break
    assert seen == [f"run-{i}" for i in reversed(range(7))]


async def test_run_update_replaces_the_row(store: StateStore, tenant: str) -> None:
    """Putting a run again replaces it; a changed started_at moves it without leaving a duplicate."""
    start = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    await store.runs.put(run("r1", start, status="running"))
    await store.runs.put(run("r1", start, status="done", after={"x": 1}))
    await store.runs.put(run("r1", start + dt.timedelta(seconds=5), status="done"))
    page, token = await store.runs.page()
    assert [(r["id"], r["status"]) for r in page] == [("r1", "done")] and token is None
    assert (await store.runs.get("r1"))["started_at"] == start + dt.timedelta(seconds=5)


async def test_big_run_payload_round_trips(store: StateStore, tenant: str) -> None:
    """A run whose plan and snapshots exceed 64 KiB (incompressible) is stored and read back intact."""
    r = run("big", dt.datetime.now(dt.UTC), plan={"blob": base64.b64encode(os.urandom(150_000)).decode()},
            before={"users": [f"user-{i}@contoso.com" for i in range(5000)]}, after={"n": 2**40})
    await store.runs.put(r)
    assert await store.runs.get("big") == r
    page, _ = await store.runs.page()
    assert page == [r]


async def test_run_over_one_mib_is_refused_before_sending(store: StateStore, tenant: str) -> None:
    """An entity over 1 MiB raises PayloadTooLarge and nothing is written (Azurite would accept it)."""
    blob = {f"k{i}": base64.b64encode(os.urandom(30_000)).decode() for i in range(40)}
    with pytest.raises(PayloadTooLarge):
        await store.runs.put(run("huge", dt.datetime.now(dt.UTC), plan=blob))
    with pytest.raises(NotFound):
        await store.runs.get("huge")


async def test_get_run_missing_is_not_found(store: StateStore, tenant: str) -> None:
    """An unknown run id raises NotFound; a run without started_at is refused as bad input."""
    with pytest.raises(NotFound):
        await store.runs.get("nope")
    with pytest.raises(InputError):
        await store.runs.put({"id": "x"})


async def test_passkey_reads_are_counted_per_instance_and_summed(store: StateStore, tenant: str) -> None:
    """Two instances count their reads for one run, each its own properties (a later count replaces only its
    own); the sum, the first and the last read come back; the run's listing never shows the count's row, and
    the recorder replacing the run's row leaves the count alone."""
    start = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    await store.runs.put(run("sweep-1", start, kind="sweep", changedUsers=60))
    assert await store.runs.details("sweep-1") is None
    at = [start + dt.timedelta(seconds=s) for s in range(5)]
    await store.runs.count_details("sweep-1", "a", 20, at[1], at[1])
    await store.runs.count_details("sweep-1", "b", 20, at[0], at[2])
    await store.runs.count_details("sweep-1", "a", 40, at[1], at[4])
    await store.runs.put(run("sweep-1", start, kind="sweep", changedUsers=60, result="complete"))
    assert await store.runs.details("sweep-1") == {"read": 60, "firstAt": at[0], "lastAt": at[4]}
    page, _ = await store.runs.page(limit=10)
    assert [r["id"] for r in page] == ["sweep-1"]
