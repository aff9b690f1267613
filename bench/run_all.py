"""Run every benchmark and write the figures into README.md (between the bench markers).

    python -m bench.run_all [--smoke] [--no-readme] [--users 2000,4000] [--apply-users 2000] [--seed 1]
        [--latency-ms 150 --latency-p99-ms 800 --latency-per-item-ms 2]

Each benchmark runs in its own process (`python -m bench.<name> --json`) so imports, RSS and CPU are
its own; the JSON objects are printed as one JSON list on stdout and rendered as a table headed by the
commit, the date, the machine and the conditions (the simulator's latency, its drawn bucket, Graph's
authentication-method and Conditional Access limits, the load average while they ran). Nothing in the
section is written by hand: `make bench` rewrites all of it.

The simulator is the pessimistic Graph of graphsim/README.md: every changed user's passkey read waits on
the authentication-method limit (6 a second), so the mass-rename sizes are thousands, not the hundred
thousands an instant simulator allowed; each run draws the bucket from its seed and the product is not
told it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import commit, machine
from graphsim.config import REALISTIC_LATENCY

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def run_one(module: str, *args: str) -> dict[str, Any]:
    """`python -m bench.<module> --json ARGS`; its one JSON object (or an error record)."""
    done = subprocess.run([sys.executable, "-m", f"bench.{module}", "--json", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    lines = done.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"benchmark": module, "error": (done.stderr or done.stdout)[-1500:], "args": list(args)}
    result["exit_code"] = done.returncode
    return result


def _mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def table(results: list[dict[str, Any]], box: dict[str, Any], conditions: str) -> str:
    """The README section body: where and when, the conditions, then one row per figure with its target."""
    rows = ["| benchmark | figure | target | met |", "|---|---|---|---|"]
    renames = [r for r in results if r.get("benchmark") == "mass_rename" and "error" not in r]
    for r in renames:
        n = f"{r['users']:,} users" + (f", {r['instances_run']} processor processes" if r.get("instances_run") else "")
        n += ", authentication-method reads unlimited" if r.get("auth_methods_rps") == 0 else ""
        bound = f", set by the {r['optimum_bound'].replace('_', '-')} bound" if r.get("optimum_bound") else ""
        rows.append(f"| mass rename ({n}) | {r['seconds']} s vs optimum {r['optimum_seconds']} s{bound}: ratio "
                    f"{r['ratio_to_optimum']} | >= 0.9 | {_mark(r['ratio_to_optimum'] >= 0.9)} |")
        if r.get("holders_listed") is not None:
            hb = r["holders_optimum_bound"].replace("_", "-")
            rows.append(f"| mass rename ({n}) | {r['holders_listed']:,} holders the registration report listed "
                        f"flagged in {r['holders_flagged_seconds']} s vs optimum {r['holders_optimum_seconds']} s, set "
                        f"by the {hb} bound: ratio {r['holders_ratio_to_optimum']}; every passkey's details read in "
                        f"{r['details_complete_seconds']} s, {r['details_pending']} flags left pending | ratio >= 0.9, "
                        f"none pending | {_mark(r['holders_ratio_to_optimum'] >= 0.9 and not r['details_pending'])} |")
        rows.append(f"| mass rename ({n}) | CPU {r['cpu_ms_per_user']} ms per changed user | <= 1 | "
                    f"{_mark(r['cpu_ms_per_user'] <= 1)} |")
        rows.append(f"| mass rename ({n}) | {r['graph_requests_per_user']} Graph requests per user "
                    f"({r['resource_units_per_user']} RU, {r['responses_429']} answered 429) | <= 0.06 | "
                    f"{_mark(r['graph_requests_per_user'] <= 0.06)} |")
        naive = f"; naive SDK client {r['baseline_ratio']}x slower" if r.get("baseline_sample") else ""
        wrong = {k: r.get(k, 0) for k in ("missed", "unexpected", "duplicates")}
        rows.append(f"| mass rename ({n}) | flags written {r['flags_written']:,} of {r['flags_expected']:,} "
                    f"(by user id and new UPN: {wrong['missed']} missed, {wrong['unexpected']} unexpected, "
                    f"{wrong['duplicates']} duplicates); peak RSS {r['peak_rss_mb']} MiB{naive} | all flags, none "
                    f"twice | {_mark(r['flags_written'] == r['flags_expected'] and not any(wrong.values()))} |")
    renames = [r for r in renames if not r.get("instances_run")]  # RSS growth: the in-process runs
    if len(renames) >= 2:
        small, large = min(renames, key=lambda r: r["users"]), max(renames, key=lambda r: r["users"])
        ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
        rows.append(f"| mass rename RSS | {large['users']:,} vs {small['users']:,} users: {ratio:.2f}x | <= 1.25x | "
                    f"{_mark(ratio <= 1.25)} |")
    for r in results:
        kind = r.get("benchmark")
        if "error" in r:
            rows.append(f"| {kind} | failed: {str(r['error']).splitlines()[-1][:120] if r['error'] else '?'} | | "
                        "**no** |")
        elif kind == "apply":
            done = (r["apply_result"] == "applied" and r["second_apply_graph"]["writes"] == 0
                    and r["verify_compliant"])
            rows.append(f"| apply ({r['users']:,} users, {r['shape']} shape) | {r['apply_seconds']} s, "
                        f"{r['apply_graph']['requests']} Graph requests ({r['apply_graph']['writes']} writes, "
                        f"{r['apply_graph']['ca_requests']} on Conditional Access, "
                        f"{r['apply_graph']['responses_429']} answered 429); second apply "
                        f"{r['second_apply_seconds']} s with {r['second_apply_graph']['writes']} writes; verify "
                        f"{r['verify_seconds']} s | applied, read back, second apply writes nothing, verify passes | "
                        f"{_mark(done)} |")
        elif kind == "cold_start":
            rows.append(f"| cold start | import + index {r['import_index_seconds']} s vs bare `import azure.functions` "
                        f"{r['bare_import_seconds']} s: {r['ratio_to_bare_import']}x; first verify "
                        f"{r['first_verify_seconds']} s | <= 2x | {_mark(r['ratio_to_bare_import'] <= 2)} |")
        elif kind == "state_writes":
            rows.append(f"| batched state writes | {r['batched_entities_per_s']:,} vs {r['single_entities_per_s']:,} "
                        f"entities/s single upserts: {r['ratio']}x (vs 16 concurrent singles: "
                        f"{r['ratio_vs_concurrent_single']}x) | >= 5x | {_mark(r['ratio'] >= 5)} |")
        elif kind == "webhook_ack":
            rows.append(f"| webhook ack over HTTP | p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms over "
                        f"{r['notifications']:,} | p99 <= 50 ms | {_mark(r['p99_ms'] <= 50)} |")
    head = (f"Measured by `make bench` at commit {commit(12)} on {dt.datetime.now(dt.UTC):%Y-%m-%d}, on "
            f"{box['cpu']}, {box['cores']} cores, {box['ram_gib']} GiB RAM, Python {box['python']} ({box['os']}); "
            f"Azurite and the Graph simulator run on the same machine, one instance of the product where a row "
            f"does not say otherwise (with processor processes: the sweep and each processor its own process, "
            f"CPU of all of them, interpreter start included). {conditions}")
    return "\n".join([head, "", *rows])


def conditions(results: list[dict[str, Any]], latency: dict[str, float], loads: list[float]) -> str:
    """The simulator's conditions as the benchmarks recorded them, and the machine's load while they ran."""
    drawn = [r["bucket_drawn"] for r in results if r.get("bucket_drawn")]
    auth = sorted({r["auth_methods_rps"] for r in results if "auth_methods_rps" in r})
    buckets = "; ".join(f"seed {d['seed']}: {d['capacity_ru']:,.0f} RU refilled at {d['refill_ru_per_s']:,} RU/s"
                        for d in drawn[:1])
    return (f"Conditions: Graph latency median {latency['latency_ms']:g} ms, p99 {latency['latency_p99_ms']:g} ms, "
            f"+{latency['latency_per_item_ms']:g} ms per item; resource-unit bucket drawn at random and not told "
            f"to the product ({buckets or 'none drawn'}); authentication-method reads limited to "
            f"{', '.join(f'{a:g}' for a in auth if a > 0) or '?'} a second"
            f"{' (unlimited where a row says so)' if 0 in auth else ''}; Conditional Access 1 request a second; "
            f"load average (1 min) {min(loads):.1f} to {max(loads):.1f} while the benchmarks ran.")


def write_readme(body: str) -> None:
    """Replace what is between the bench markers in README.md (the section must exist)."""
    text = README.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + body + "\n" + text[end:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; never touches README.md")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--users", default="2000,4000", help="mass-rename sizes, comma-separated")
    parser.add_argument("--instances", type=int, default=4,
                        help="also run the largest mass rename with this many processor processes (0: not)")
    parser.add_argument("--apply-users", type=int, default=2000, help="users in the apply benchmark's tenant")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulator's drawn bucket")
    parser.add_argument("--latency-ms", type=float, default=REALISTIC_LATENCY["latency_ms"],
                        help="median Graph latency for the benchmarks that call Graph (default %(default)s)")
    parser.add_argument("--latency-p99-ms", type=float, default=REALISTIC_LATENCY["latency_p99_ms"])
    parser.add_argument("--latency-per-item-ms", type=float, default=REALISTIC_LATENCY["latency_per_item_ms"])
    args = parser.parse_args(argv)
    extra = ["--smoke"] if args.smoke else []
    latency = {"latency_ms": args.latency_ms, "latency_p99_ms": args.latency_p99_ms,
               "latency_per_item_ms": args.latency_per_item_ms}
    flags = [f for name, value in latency.items() for f in (f"--{name.replace('_', '-')}", str(value))]
    drawn = ["--random-bucket", "--seed", str(args.seed)]
    loads: list[float] = []

    def one(module: str, *module_args: str) -> dict[str, Any]:
        result = run_one(module, *module_args)
        loads.append(os.getloadavg()[0])
        return result

    sizes = [120] if args.smoke else [int(x) for x in args.users.split(",") if x.strip()]
    results = [one("mass_rename", "--users", str(n), *drawn, *flags, *extra) for n in sizes]
    if args.instances:
        results.append(one("mass_rename", "--users", str(max(sizes)), "--instances", str(args.instances),
                           "--baseline-sample", "0", *drawn, *flags, *extra))
        # The directory-bound world: authentication-method reads unlimited, so the RU bucket and the delta chain bind.
        results.append(one("mass_rename", "--users", str(max(sizes)), "--instances", str(args.instances),
                           "--auth-methods-rps", "0", "--baseline-sample", "0", *drawn, *flags, *extra))
    results += [one("apply", "--users", str(args.apply_users), *shape, *drawn, *flags, *extra)
                for shape in ([], ["--profiles"])]
    results += [one("cold_start", *flags, *extra), one("state_writes", *extra), one("webhook_ack", *extra)]
    body = table(results, machine(), conditions(results, latency, loads))
    if not (args.smoke or args.no_readme):
        write_readme(body)
    sys.stdout.write(json.dumps(results, sort_keys=True) + "\n")
    sys.stderr.write(body + "\n")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
