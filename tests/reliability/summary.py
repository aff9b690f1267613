"""The reliability tests' figures: each test records what it injected and what came out of it.

Every test in tests/reliability calls `record(...)` once, *before* it asserts, so a failing run shows up
in the figures too (a run that did not survive, data lost). Entries go into `.reliability/summary.json`
(git-ignored) keyed by test name, so re-running one test replaces only its own entry.
`python -m tests.reliability.report` turns the file into the README's table.

Kinds of faults counted (keys of `faults`):

    429, 503, 504, drop   injected by the Graph simulator (its `/_sim/stats` "faults" counters)
    latency               Graph requests answered after an injected delay (latency knobs on)
    azurite_kill          Azurite SIGKILLed during a run (or stopped for good) and started on the same ports
    azurite_restart       Azurite restarted (SIGTERM, data kept) at a random point of a run, writes in flight
    sigkill               a Passkey Guard process (`python -m shared sweep`) SIGKILLed mid-run
    race                  concurrent writers racing for the same lease or the same user's flag
    throttled             Graph 429s from its own exhausted bucket (a tiny budget), nothing injected
    notify_drop           change notifications the simulator dropped ("Graph lost it") while users were renamed
    notify_delay          change notifications the simulator held back and delivered late

Every count is observed during the run (the simulator's counters, kills whose checkpoint moved, attempts
made), never a number typed into the test.
"""
from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from bench.common import commit as bench_commit

ROOT = Path(__file__).resolve().parents[2]
SUMMARY_PATH = Path(os.environ.get("PG_RELIABILITY_SUMMARY", ROOT / ".reliability" / "summary.json"))
FAULT_KINDS = ("429", "503", "504", "drop", "latency", "azurite_kill", "azurite_restart", "sigkill", "race",
               "throttled", "notify_drop", "notify_delay")


@cache
def commit() -> str:
    """The commit the tests run at (12 hex digits), `+dirty` when the working tree differs from it."""
    return bench_commit(12)


def machine() -> str:
    """What ran the tests: OS, architecture, cores and Python."""
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def soak_factor() -> int:
    """How much bigger `make soak` makes the runs (PG_SOAK, default 1 in `make test`)."""
    try:
        return max(1, int(os.environ.get("PG_SOAK", "1")))
    except ValueError:
        return 1


def load(path: Path | None = None) -> dict[str, Any]:
    """The summary file as a dict (`{"tests": {...}}`), empty when it does not exist yet."""
    path = path or SUMMARY_PATH
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"tests": {}}
    if not isinstance(data, dict) or not isinstance(data.get("tests"), dict):
        return {"tests": {}}
    return data


def record(test: str, *, area: str, faults: Mapping[str, int] | None = None, runs: int = 0, survived: int = 0,
           failed: int = 0, bad_inputs: int = 0, rejected: int = 0, data_lost: int = 0,
           detail: Mapping[str, Any] | None = None, path: Path | None = None) -> dict[str, Any]:
    """Write one test's figures into the summary file (replacing that test's previous entry).

    `runs`: product runs exposed to faults, counted as they happened (each apply, sweep or delivery attempt);
    `failed`: those that stopped with our own clear error and were run again (apart: they neither survived nor
    lost anything); `survived`: those that completed and whose outcome matches the ground truth. Whatever is
    left, `runs - failed - survived`, did not survive: the figure can show it. `bad_inputs`: inputs that are
    invalid (malformed, unauthenticated, forged or oversized, judged by the test, not by the code under test);
    `rejected`: how many of those were refused (4xx or our error raised before any write).
    `data_lost`: users missed, duplicate flags, wrong snapshots, rows written
    by a refused request: anything that makes the final state differ from the ground truth.
    """
    path = path or SUMMARY_PATH
    if not 0 <= survived + failed <= runs:
        raise ValueError(f"{test}: survived ({survived}) + failed ({failed}) must not exceed runs ({runs})")
    if not 0 <= rejected <= bad_inputs:
        raise ValueError(f"{test}: rejected ({rejected}) must not exceed bad inputs ({bad_inputs})")
    unknown = set(faults or {}) - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}")
    entry = {"area": area, "faults": {k: int(v) for k, v in (faults or {}).items() if v},
             "runs": runs, "survived": survived, "failed": failed, "badInputs": bad_inputs, "rejected": rejected,
             "dataLost": data_lost, "soak": soak_factor(), "detail": dict(detail or {}),
             "commit": commit(), "machine": machine(),
             "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    data = load(path)
    data["tests"][test] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return entry
