"""Run the test suite N times in a row while every core is kept busy by another process (issue #12, item 10).

    python -m bench.suite_under_load [--runs 10] [--burners N] [--report PATH] [--resume] [-- PYTEST ARGS...]

A flaky suite is one that passes on an idle machine and fails on a busy one, so this starts one CPU burner
process per core (normal priority, a tight loop) and then runs `python -m pytest -q -p no:cacheprovider`
(plus the given pytest arguments, e.g. a path) up to `--runs` times, stopping at the first failure. Each
run's outcome and duration is printed as it ends, and the report (JSON, default `.reliability/under-load.json`)
is rewritten after each run (`finished` is false until the series ends). It holds the commit, the machine,
the conditions (burners, load average) and every run. Ten runs take longer than a working session here, so
`--resume` goes on with an unfinished series of the same commit, machine and conditions in which every run so
far passed (the run cut off by the stop counts neither way). The exit status is 0 only when every run passed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import commit, machine

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REPORT = ROOT / ".reliability" / "under-load.json"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


def burn() -> None:  # pragma: no cover - runs in the burner processes until they are terminated
    """Keep one core busy with pure-Python work until terminated."""
    n = 0
    while True:
        n = (n * 1103515245 + 12345) & 0x7FFFFFFF


def start_burners(count: int) -> list[multiprocessing.Process]:
    """`count` burner processes at normal priority (daemonic: they die with this process)."""
    burners = [multiprocessing.Process(target=burn, name=f"cpu-burner-{i}", daemon=True) for i in range(count)]
    for proc in burners:
        proc.start()
    return burners


def stop_burners(burners: list[multiprocessing.Process]) -> None:
    """Terminate the burners this runner started (by their own handles) and reap them."""
    for proc in burners:
        proc.terminate()
    for proc in burners:
        proc.join(timeout=10)


def run_suite(pytest_args: list[str]) -> tuple[bool, float, str]:
    """One pytest run: (passed, seconds, its last summary line)."""
    started = time.monotonic()
    done = subprocess.run([*PYTEST, *pytest_args], cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = round(time.monotonic() - started, 1)
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    tail = lines[-1] if lines else done.stderr.strip()[-300:]
    if done.returncode != 0:
        sys.stdout.write(done.stdout[-6000:] + done.stderr[-2000:])
    return done.returncode == 0, seconds, tail


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def resumed(path: Path, fresh: dict[str, Any]) -> dict[str, Any]:
    """The unfinished series in `path`, to go on with, when it ran the same commit (not dirty), on this machine,
    the same way, and every run so far passed; else `fresh`, with the reason. The run that was going on when
    the series stopped (a machine restart, a session's end) is not counted either way; `resumedAt` records
    each resumption."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return fresh
    same = {key: earlier.get(key) == fresh[key] for key in ("commit", "machine", "conditions", "runsWanted")}
    if (not all(same.values()) or "dirty" in fresh["commit"] or earlier.get("finished")
            or not all(run.get("passed") for run in earlier.get("runs", []))):
        sys.stdout.write(f"not resuming {path}: a new series (same: {same}, finished: {earlier.get('finished')})\n")
        return fresh
    earlier.setdefault("resumedAt", []).append(_now())
    sys.stdout.write(f"resuming {path} after {len(earlier['runs'])} passing run(s)\n")
    return dict(earlier)


def write_report(path: Path, report: dict[str, Any], *, finished: bool) -> None:
    """Write the report after every run, so a long series that is stopped still shows the runs it made."""
    passes = sum(1 for run in report["runs"] if run["passed"])
    report["passedInARow"] = passes  # the loop stops at the first failure
    report["allPassed"] = passes == report["runsWanted"]
    report["finished"] = finished
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Parse the options, load the cores, run the suite until N passes or the first failure, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Arguments after `--` go to pytest (e.g. a test path).")
    parser.add_argument("--runs", type=int, default=10, help="runs in a row that must pass (default 10)")
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 1,
                        help="CPU burner processes (default: one per core)")
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="where the JSON report goes")
    parser.add_argument("--resume", action="store_true",
                        help="go on with the unfinished series in --report if it ran this commit the same way")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "commit": commit(), "machine": machine(), "started": _now(),
        "conditions": {"burners": args.burners, "burnerPriority": "normal (nice 0)",
                       "command": " ".join(["python -m pytest -q -p no:cacheprovider", *args.pytest_args])},
        "runsWanted": args.runs, "runs": []}
    if args.resume:
        report = resumed(args.report, report)
    burners = start_burners(args.burners)
    try:
        for number in range(len(report["runs"]) + 1, args.runs + 1):
            passed, seconds, tail = run_suite(args.pytest_args)
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            report["runs"].append({"run": number, "passed": passed, "seconds": seconds, "summary": tail,
                                   "ended": _now(), "loadAverage1m": None if load is None else round(load, 2)})
            write_report(args.report, report, finished=not passed or number == args.runs)
            sys.stdout.write(f"run {number}/{args.runs}: {'pass' if passed else 'FAIL'} in {seconds} s ({tail})\n")
            sys.stdout.flush()
            if not passed:
                break
    finally:
        stop_burners(burners)
    passes = report["passedInARow"]
    sys.stdout.write(f"{passes} of {args.runs} runs passed in a row with {args.burners} burner(s); "
                     f"report: {args.report}\n")
    return 0 if report["allPassed"] else 1


if __name__ == "__main__":
    sys.exit(main())
