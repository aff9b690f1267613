"""Flag a mass rename at Graph's throttle limit: the product's real sweep -> queue -> processor path.

    python -m bench.mass_rename --users 50000 --json [--throttle-scale 1] [--baseline-sample 200]
                                [--random-bucket --seed S] [--passkey-ratio 0.5] [--auth-methods-rps 6]
                                [--latency-ms 150 --latency-p99-ms 800 --latency-per-item-ms 2]
                                [--instances K]

Setup (not timed): N generated users, `--passkey-ratio` of them with a passkey; the first sweep seeds the snapshots;
then every user is renamed at once in the simulator (`bulk_rename`, no notifications), the simulator's
stats are reset and its RU bucket refilled (Graph's large-tenant budget: 8,000 RU per 10 s, starting
full, times `--throttle-scale`; with `--random-bucket`, a capacity and refill drawn from `--seed`, see
`draw_bucket`). The product is never told the bucket nor the authentication-method limit: its RU pace and
its call pace learn them from Graph's answers and start the measured run from their starting guesses
(`reset()`). The drawn values are in the JSON output.

Measured: from the start of `sweep()` until the last queue message is handled, i.e. every flag is
written and every flag's passkey details are read (`details_complete_seconds`, the same as `seconds`). The
sweep enqueues to Azurite; the product's in-process drain (`shared.upn.drain`) pulls messages from both
queues and runs `handle_message` and `handle_passkey_message`, like the Functions host's queue triggers
(batchSize 16, a new batch once 8 or fewer are in flight). The seeding sweep (not timed) builds the
passkey holders index from the registration report, so the holders it lists are flagged without a passkey
read: `holders_flagged_seconds` runs from the start to the last such flag's detection, against
`holders_optimum_seconds` (the delta chain's or the report's bound). Graph requests and resource units come
from the simulator's own accounting.

The optimum: Graph's bucket starts full, so no client can finish before
`(RU needed - bucket at start) / refill rate`, RU needed being what the simulator charged for the
successful calls of this run; nor before `(changed users - burst) / auth_methods_rps`, since each changed
user needs one `fido2Methods` read and those have their own per-tenant limit (`auth_methods_rps`, its
bucket `auth_methods_rps * auth_methods_window_s`, also starting full); nor before the delta chain's pages
(one after the other) times the median latency; nor before the registration report's pages this run had to read,
under the reports limit. `optimum_seconds` is the largest, `optimum_bound` names it.
`ratio_to_optimum = optimum_seconds / seconds` (1.0 = at the limit).

The flags are compared with the simulator's ground truth by user id and new UPN: `missed`, `unexpected`, and
`duplicates` (one change detected twice in a flag's history); the exit code is 1 unless all three are 0.

The baseline: a naive client (one `fido2Methods` GET per user through the SDK's models, one after
another) on a sample of users; `baseline_seconds_extrapolated` = its seconds per user x N (ignoring
Graph's throttle and every storage write, both in its favour), and `baseline_ratio` =
baseline_seconds_extrapolated / seconds (how many times faster the product is).
"""
from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from typing import Any

from bench.common import BENCH_SETTINGS, base_parser, emit, latency_knobs, machine, peak_rss_mb, tenant_doc

log = logging.getLogger(__name__)

REPORT_ROUTE = "GET /reports/authenticationMethods/userRegistrationDetails"
CAPACITY_RU = 8000  # Graph, large tenant: 8,000 RU per 10 s (platform-limits.md)
REFILL_RU_PER_S = 800


def draw_bucket(seed: int) -> tuple[float, float]:
    """(capacity RU, refill RU/s) for the simulator, drawn from `seed`: a capacity from half Graph's smallest
    published bucket to twice its largest (1,750 to 16,000 RU), refilled over 5 to 20 s."""
    import random

    rng = random.Random(seed)
    capacity = round(rng.uniform(1750, 16000))
    return float(capacity), round(capacity / rng.uniform(5, 20), 1)


async def consume(services: Any, sweep_done: asyncio.Event, stats: dict[str, Any]) -> None:
    """The product's in-process drain (host.json's rules: 16 at a time, refill at <= 8 in flight) until the
    sweep is done and the queue is empty; record when the last message finished."""
    from shared.upn.drain import process_queue

    def delivered() -> None:
        stats["last_done"] = time.monotonic()

    totals = await process_queue(services, until=sweep_done.is_set, on_delivered=delivered)
    if totals["failed"] or totals["poisoned"] or totals["remaining"]:
        raise RuntimeError(f"the queue did not drain cleanly: {totals}")
    stats["messages"] += totals["messages"]
    stats["flagged"] += len(totals["flagged"])
    stats["requeued"] += totals["requeued"]


async def baseline(services: Any, user_ids: list[str]) -> float:
    """Seconds per user of the naive client: SDK models, one fido2Methods GET per user, sequentially."""
    client = services.graph.client
    started = time.perf_counter()
    for uid in user_ids:
        await client.users.by_user_id(uid).authentication.fido2_methods.get()
    return (time.perf_counter() - started) / max(1, len(user_ids))


def expected_flags(sim: Any) -> tuple[set[tuple[str, str]], list[str]]:
    """(every passkey holder's (user id, UPN) after the rename: the flags the run must write; a sample of user
    ids), read in a child process so the tenant's ground truth never inflates this process's peak RSS."""
    code = ("import json,sys,urllib.request;"
            "s=json.load(urllib.request.urlopen(sys.argv[1]+'/_sim/state',timeout=300));"
            "u=s['users'];"
            "print(json.dumps({'holders':[[x['id'].lower(),x['userPrincipalName'].lower()] for x in u "
            "if (x.get('authentication') or {}).get('fido2Methods')],'ids':[x['id'] for x in u[:1000]]}))")
    out = subprocess.run([sys.executable, "-c", code, sim.root_url], capture_output=True, text=True, check=True,
                         timeout=600)
    import json

    data = json.loads(out.stdout)
    return {(uid, upn) for uid, upn in data["holders"]}, list(data["ids"])


async def flags_against(services: Any, expected: set[tuple[str, str]], listed: set[str],
                        started_at: float) -> dict[str, Any]:
    """The flags written, compared with the ground truth by user id and new UPN (not by count): `missed`
    holders without a flag for their new UPN, `unexpected` flags of nobody's rename, and `duplicates`: one
    change detected more than once in a flag's history (one row per user cannot show a duplicate by itself).
    Also `details_pending` (flags whose passkeys were never read) and, for the holders the index `listed` when
    the run began, the seconds from `started_at` (epoch) to the last one's detection (`holders_flagged_seconds`)."""
    written, duplicates, pending, last_listed = set(), 0, 0, started_at
    async for stored in services.store.flags.every():
        flag = stored.flag
        written.add((flag.user_id.lower(), flag.new_upn.lower()))
        detections = sum(1 for h in flag.history if h.note.startswith("UPN changed"))
        duplicates += max(0, detections - 1)
        pending += flag.details_pending
        if flag.user_id.lower() in listed:
            last_listed = max(last_listed, flag.detected_at.timestamp())
    return {"flags_written": len(written), "missed": len(expected - written), "unexpected": len(written - expected),
            "duplicates": duplicates, "details_pending": pending,
            "holders_flagged_seconds": round(last_listed - started_at, 2)}


async def measure_here(services: Any) -> dict[str, Any]:
    """The measured run in this process: the sweep and the product's in-process drain side by side."""
    from shared.upn.sweep import sweep

    sweep_done = asyncio.Event()
    counters: dict[str, Any] = {"messages": 0, "flagged": 0, "requeued": 0, "last_done": None}
    cpu0, t0, wall0 = time.process_time(), time.monotonic(), time.time()

    async def sweeper() -> dict[str, Any]:
        try:
            return await sweep(services, trigger="bench")
        finally:
            sweep_done.set()

    swept, _ = await asyncio.gather(sweeper(), consume(services, sweep_done, counters))
    t1 = counters["last_done"] or time.monotonic()
    budget = services.graph.budget
    return {"seconds": t1 - t0, "started_at": wall0, "cpu": time.process_time() - cpu0, "rss": peak_rss_mb(),
            "swept": swept,
            "counters": counters, "pace_ru_per_s_at_end": round(budget.rate, 1), "pace_pauses": budget.throttled,
            "passkey_reads_per_s_at_end": round(services.graph.auth_pace.rate, 2)}


async def measure_in_processes(stack: Any, instances: int) -> dict[str, Any]:
    """The measured run as on Azure: `python -m shared sweep` and `instances` queue processors
    (`bench.instance`), each its own OS process with its own paces, against this simulator and Azurite.
    Seconds run from starting the processes to the last message any of them handled (wall clock); CPU is
    the children's, interpreter start included; RSS the largest process's."""
    import json
    import os
    import resource
    import tempfile
    from pathlib import Path

    env = {**os.environ, **stack.settings, "PG_INSTANCE_SETTINGS": json.dumps(stack.settings)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as tmp:
        done = Path(tmp) / "sweep-done"
        t0 = time.time()
        processors = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.instance", "--wait-seconds", "300", "--until-file", str(done), env=env,
            stdout=subprocess.PIPE) for _ in range(instances)]
        sweeper = await asyncio.create_subprocess_exec(sys.executable, "-m", "shared", "sweep", "--json", env=env,
                                                       stdout=subprocess.PIPE)
        swept = json.loads((await sweeper.communicate())[0].decode())
        done.touch()
        reports = [json.loads((await p.communicate())[0].decode().strip().splitlines()[-1]) for p in processors]
    if sweeper.returncode or any(p.returncode for p in processors) or any(r["failed"] for r in reports):
        raise RuntimeError(f"the processes did not finish cleanly: sweep {sweeper.returncode}, {reports}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    last = max((r["lastDoneAt"] for r in reports if r["lastDoneAt"]), default=time.time())
    counters = {k: sum(r[k] for r in reports) for k in ("messages", "flagged", "requeued")}
    return {"seconds": last - t0, "started_at": t0, "cpu": cpu,
            "rss": max(r["peakRssMb"] for r in reports), "swept": swept, "counters": counters,
            "instances": reports, "pace_pauses": sum(r["ruPauses"] for r in reports)}


async def run(users: int, scale: float, sample: int, seed: int | None = None,
              latency: dict[str, float] | None = None, instances: int = 0, passkey_ratio: float = 0.5,
              auth_methods_rps: float | None = None) -> dict[str, Any]:
    """The benchmark; `seed` draws the simulator's bucket (`draw_bucket`), else Graph's large-tenant one;
    `instances` > 0 runs the sweep and that many processors as their own processes; `auth_methods_rps` sets
    the simulator's authentication-method limit (None: its pessimistic default; 0: none)."""
    from devhost.stack import local_stack
    from shared.upn.sweep import sweep

    bucket_ru, refill_ru_per_s = draw_bucket(seed) if seed is not None else (CAPACITY_RU, REFILL_RU_PER_S)
    latency = latency if latency is not None else latency_knobs()
    doc = tenant_doc(users=users, passkey_ratio=passkey_ratio, simulator={
        "throttle_capacity_ru": bucket_ru, "throttle_refill_ru_per_s": refill_ru_per_s,
        "throttle_scale": scale, "notify_paused": True, **latency,
        **({} if auth_methods_rps is None else {"auth_methods_rps": auth_methods_rps})})
    # The product's settings say nothing of the bucket: its pace learns it (shared/graph/budget.py).
    async with local_stack(doc, settings=BENCH_SETTINGS, serve=False, ensure_store=True) as stack:
        sim, services = stack.sim, stack.services
        seeded = await sweep(services, trigger="bench-seed")
        assert seeded["seeded"] and seeded["complete"], seeded
        renamed = sim.control("POST", "users/bulk_rename", {"from_domain": "contoso.example",
                                                            "to_domain": "fabrikam.example", "notify": False},
                              timeout=600)
        expected, sample_ids = await asyncio.to_thread(expected_flags, sim)
        # Graph's bucket full again, and the product's paces back at their starting guesses: what the seed sweep
        # taught them is forgotten, so the measured run learns the bucket and the call limit from the start.
        await asyncio.sleep(0)
        sim.control("POST", "throttle/reset")
        services.graph.budget.reset()
        services.graph.auth_pace.reset()
        sim.reset_stats()
        knobs = sim.control("GET", "config")
        # what the index (the report) says before the run, of the users renamed
        listed = await services.store.holders.load_all() & {uid for uid, _ in expected}

        measured = await (measure_in_processes(stack, instances) if instances else measure_here(services))
        seconds, cpu, rss, swept, counters = (measured[k] for k in ("seconds", "cpu", "rss", "swept", "counters"))
        stats = sim.stats()

        compared = await flags_against(services, expected, listed, measured["started_at"])

        base_ids = sample_ids[:sample]
        sim.configure(throttle_enabled=False)
        per_user = await baseline(services, base_ids) if base_ids else 0.0

    changed = int(renamed.get("renamed", users)) or users
    # Each throttled call here costs 1 RU: refused by the RU bucket, or by the authentication-method limit
    # after the RU bucket charged it (usage counts while throttled).
    throttled = stats.get("throttled", {})
    throttled_ru = int(throttled.get("ru", 0)) + int(throttled.get("auth_methods", 0))
    ru_total = int(stats["resource_units"])
    ru_needed = ru_total - throttled_ru
    capacity, refill = bucket_ru * scale, refill_ru_per_s * scale
    optimum_ru = max(0.0, (ru_needed - capacity) / refill)
    auth_rate = float(knobs["auth_methods_rps"]) if knobs["throttle_enabled"] else 0.0
    auth_burst = max(1.0, auth_rate * float(knobs["auth_methods_window_s"]))
    optimum_auth = max(0.0, (changed - auth_burst) / auth_rate) if auth_rate > 0 else 0.0
    # The delta chain: each page of changed users is one request after the other, at the median latency at best.
    optimum_chain = int(stats.get("delta_pages", 0)) * float(knobs.get("latency_ms", 0.0)) / 1000
    # The report: its pages one after the other under the reports limit (a bucket of that many requests per 10 s,
    # starting full). Only what this run had to read of it counts: one request when the index is current.
    report_rate = float(knobs["reports_requests_per_10s"]) / 10 if knobs["throttle_enabled"] else 0.0
    report_pages = int(stats["calls"]["by_route"].get(REPORT_ROUTE, 0)) - int(throttled.get("reports", 0))
    optimum_report = max(report_pages * float(knobs.get("latency_ms", 0.0)) / 1000,
                         (report_pages - report_rate * 10) / report_rate if report_rate > 0 else 0.0)
    bounds = {"ru": optimum_ru, "auth_methods": optimum_auth, "delta_chain": optimum_chain, "report": optimum_report}
    bound = max(bounds, key=lambda k: bounds[k])
    optimum = bounds[bound]
    # Holders the report listed need no passkey read to be flagged: the delta chain and the report bound them.
    holders_bound = max(("delta_chain", "report"), key=lambda k: bounds[k])
    holders_seconds = compared["holders_flagged_seconds"]
    baseline_seconds = per_user * changed
    return {
        "benchmark": "mass_rename", "users": users, "changed_users": changed, "throttle_scale": scale,
        "bucket_capacity_ru": capacity, "refill_ru_per_s": refill,
        "bucket_drawn": {"seed": seed, "capacity_ru": bucket_ru, "refill_ru_per_s": refill_ru_per_s}
        if seed is not None else None,
        **{k: measured[k] for k in ("pace_ru_per_s_at_end", "pace_pauses", "passkey_reads_per_s_at_end", "instances")
           if k in measured}, "instances_run": instances,
        "simulator_latency": latency, "auth_methods_rps": auth_rate,
        "seconds": round(seconds, 2), "optimum_seconds": round(optimum, 2),
        "optimum_seconds_ru": round(optimum_ru, 2), "optimum_seconds_auth_methods": round(optimum_auth, 2),
        "optimum_seconds_delta_chain": round(optimum_chain, 2), "optimum_bound": bound,
        "ratio_to_optimum": round(optimum / seconds, 3) if seconds > 0 else 0.0,
        "details_complete_seconds": round(seconds, 2), "holders_listed": len(listed),
        "holders_optimum_seconds": round(bounds[holders_bound], 2), "holders_optimum_bound": holders_bound,
        "holders_ratio_to_optimum": round(bounds[holders_bound] / holders_seconds, 3) if holders_seconds > 0 else 1.0,
        "optimum_seconds_report": round(optimum_report, 2), "report_requests": report_pages,
        "resource_units": ru_total, "resource_units_needed": ru_needed,
        "resource_units_per_user": round(ru_total / changed, 4), "ru_per_renamed_user": round(ru_total / changed, 4),
        "graph_requests": int(stats["http_requests"]),
        "graph_requests_per_user": round(int(stats["http_requests"]) / changed, 4),
        "responses_429": int(stats.get("responses_429", 0)), "delta_pages": int(stats.get("delta_pages", 0)),
        "cpu_seconds": round(cpu, 2), "cpu_ms_per_user": round(cpu * 1000 / changed, 3),
        "peak_rss_mb": rss,
        **compared, "flags_expected": len(expected), "flags_reported": counters["flagged"],
        "messages": counters["messages"], "requeued_messages": counters["requeued"],
        "sweep_pages": swept["pages"], "sweep_messages": swept["messagesQueued"],
        "baseline_sample": len(base_ids), "baseline_ms_per_user": round(per_user * 1000, 3),
        "baseline_seconds_extrapolated": round(baseline_seconds, 1),
        "baseline_ratio": round(baseline_seconds / seconds, 2) if seconds > 0 else 0.0,
        "baseline_ratio_definition": "baseline_seconds_extrapolated / seconds (naive SDK client, sequential)",
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--throttle-scale", type=float, default=1.0)
    parser.add_argument("--baseline-sample", type=int, default=200)
    parser.add_argument("--random-bucket", action="store_true",
                        help="draw the simulator's bucket capacity and refill from --seed (the product is not told)")
    parser.add_argument("--seed", type=int, default=0, help="the draw's seed, with --random-bucket")
    parser.add_argument("--passkey-ratio", type=float, default=0.5, help="share of users holding a passkey")
    parser.add_argument("--auth-methods-rps", type=float, default=None,
                        help="the simulator's limit on authentication-method reads a second (0: none; default: "
                             "its pessimistic 6)")
    parser.add_argument("--instances", type=int, default=0,
                        help="run the sweep and this many queue processors as their own OS processes (0: in this "
                             "process, side by side)")
    args = parser.parse_args(argv)
    users, sample = args.users, args.baseline_sample
    if args.smoke:
        users, sample = min(users, 120), min(sample, 5)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = asyncio.run(run(users, args.throttle_scale, sample, args.seed if args.random_bucket else None,
                             latency_knobs(args), args.instances, args.passkey_ratio, args.auth_methods_rps))
    emit(result, as_json=args.json)
    clean = result["missed"] == result["unexpected"] == result["duplicates"] == 0
    return 0 if clean and result["flags_written"] == result["flags_expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
