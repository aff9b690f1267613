"""Print the reliability figures recorded by tests/reliability (and refresh the README's table).

    python -m tests.reliability.report                 # Markdown table from .reliability/summary.json
    python -m tests.reliability.report --write-readme  # ... and replace the table in README.md
    PG_RELIABILITY_SUMMARY=.reliability/soak.json python -m tests.reliability.report   # a `make soak` run

Every figure is a sum over the tests' own records (see summary.py): nothing here is typed in by hand.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.reliability.summary import FAULT_KINDS, ROOT, SUMMARY_PATH, load

README = ROOT / "README.md"
BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"
FAULT_LABELS = {
    "429": "Graph 429 with Retry-After (injected)",
    "503": "Graph 503 (injected)",
    "504": "Graph 504 (injected)",
    "drop": "Graph connections dropped",
    "latency": "Graph requests delayed by latency spikes",
    "azurite_kill": "Azurite SIGKILLed or stopped mid-run",
    "azurite_restart": "Azurite restarted mid-run, writes in flight",
    "sigkill": "`python -m shared sweep` SIGKILLed mid-run",
    "race": "concurrent contenders (applies, processors)",
    "throttled": "Graph 429 from its exhausted resource-unit bucket (not injected)",
    "notify_drop": "Change notifications dropped by Graph",
    "notify_delay": "Change notifications held back and delivered late",
}
RUN_AREAS = ("storm", "azurite", "kill", "concurrency")


def totals(tests: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Sums over every recorded test."""
    faults = {kind: 0 for kind in FAULT_KINDS}
    fault_tests: dict[str, list[str]] = {kind: [] for kind in FAULT_KINDS}
    out: dict[str, Any] = {"runs": 0, "survived": 0, "failed": 0, "badInputs": 0, "rejected": 0, "dataLost": 0,
                           "tests": len(tests), "runsByArea": {}, "applies": 0, "safeApplies": 0}
    for name, entry in sorted(tests.items()):
        for kind, count in (entry.get("faults") or {}).items():
            if kind in faults and count:
                faults[kind] += int(count)
                fault_tests[kind].append(name)
        if entry.get("area") in RUN_AREAS:
            out["runs"] += int(entry.get("runs", 0))
            out["survived"] += int(entry.get("survived", 0))
            out["failed"] += int(entry.get("failed", 0))
            # [runs that were to survive (failed attempts apart), survived]
            area = out["runsByArea"].setdefault(entry["area"], [0, 0])
            area[0] += int(entry.get("runs", 0)) - int(entry.get("failed", 0))
            area[1] += int(entry.get("survived", 0))
        if entry.get("area") == "policy":
            out["applies"] += int(entry.get("runs", 0))
            out["safeApplies"] += int(entry.get("survived", 0))
        out["badInputs"] += int(entry.get("badInputs", 0))
        out["rejected"] += int(entry.get("rejected", 0))
        out["dataLost"] += int(entry.get("dataLost", 0))
    out["faults"], out["faultTests"] = faults, fault_tests
    return out


def render(data: Mapping[str, Any]) -> str:
    """The Markdown tables for the README."""
    tests = data.get("tests") or {}
    if not tests:
        return "_No figures yet: run `make reliability` (or `make test`)._\n"
    t = totals(tests)
    soak = sorted({int(e.get("soak", 1)) for e in tests.values()})
    stamp = max(str(e.get("at", "")) for e in tests.values())
    lines = ["| Fault injected | Count | Tests |", "|---|---:|---|"]
    for kind in FAULT_KINDS:
        if t["faults"][kind]:
            lines.append(f"| {FAULT_LABELS[kind]} | {t['faults'][kind]:,} | {', '.join(t['faultTests'][kind])} |")
    lines += ["", "| Outcome | Figure |", "|---|---:|"]
    areas = ", ".join(f"{a} {r[1]}/{r[0]}" for a, r in sorted(t["runsByArea"].items()))
    lines += [f"| Runs hit by faults or races that completed with the right outcome ({areas}) | {t['survived']:,} of "
              f"{t['runs'] - t['failed']:,} |",
              f"| Attempts stopped by a fault with our clear error and run again (apart from the runs above) | "
              f"{t['failed']:,} |",
              f"| Random applies against the simulator that kept every AAGUID not removed, and whose repeat "
              f"wrote nothing | {t['safeApplies']:,} of {t['applies']:,} |",
              f"| Invalid inputs tried (fuzzed, malformed, forged, oversized; valid ones not counted) | "
              f"{t['badInputs']:,} |",
              f"| Invalid inputs rejected (a 4xx, or our error naming the field) | {t['rejected']:,} of "
              f"{t['badInputs']:,} |",
              f"| Data lost (missed or duplicate flags, wrong snapshots, writes by refused requests, leaked "
              f"secrets) | {t['dataLost']:,} |"]
    commits = sorted({str(e.get("commit", "unknown")) for e in tests.values()})
    machines = sorted({str(e.get("machine", "unknown")) for e in tests.values()})
    lines += ["", f"_Recorded by {t['tests']} tests at commit {', '.join(commits)}, last run {stamp}, on "
                  f"{'; '.join(machines)}, size factor {'/'.join(map(str, soak))} (1 = `make test`)._"]
    return "\n".join(lines) + "\n"


def write_readme(text: str, readme: Path = README) -> bool:
    """Replace the table between the markers in README.md; False when the markers are missing."""
    content = readme.read_text(encoding="utf-8")
    if BEGIN not in content or END not in content:
        return False
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}", encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.report", description=__doc__.splitlines()[0])
    parser.add_argument("--write-readme", action="store_true", help="replace the table in README.md")
    parser.add_argument("--summary", type=Path, default=SUMMARY_PATH, help="the summary file to read")
    args = parser.parse_args(argv)
    data = load(args.summary)
    text = render(data)
    print(text, end="")
    if args.write_readme and not write_readme(text):
        print(f"README.md has no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
