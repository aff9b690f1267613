"""Apply the seed's desired state to a tenant through the product's real plan -> write -> read-back path.

    python -m bench.apply --users 2000 --json [--profiles] [--random-bucket --seed S]
                          [--latency-ms 150 --latency-p99-ms 800 --latency-per-item-ms 2]

Setup (not timed): N generated users (about half with a passkey) in a tenant whose FIDO2 policy allows one
security key, in the legacy shape or (`--profiles`) migrated to passkey profiles; Graph's Conditional Access
limit of one request per second stays on, the simulator answers with the given latency, and with
`--random-bucket` its resource-unit bucket is drawn from `--seed` (the product is not told).

Measured, each from the product's own call to its end:
- `apply_seconds`: `apply_document` with the default document and a report-only Conditional Access section
  (the seed procedure: both Microsoft Authenticator AAGUIDs added, the custom authentication strength and the
  Conditional Access policy created),
  including the plan, the lockout evaluation, the writes and the read-back;
- `second_apply_seconds`: the same again, which must find nothing to change and write nothing;
- `verify_seconds`: a compliance run afterwards, which must pass.
Graph requests, writes and 429s come from the simulator's accounting; `ca_requests` are the calls on the
Conditional Access policies, which Graph lets through at one a second, so `ca_floor_seconds` (one second
between each of them) is a lower bound no client beats.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_SETTINGS, base_parser, emit, latency_knobs, machine, peak_rss_mb, tenant_doc
from bench.mass_rename import CAPACITY_RU, REFILL_RU_PER_S, draw_bucket

ROOT = Path(__file__).resolve().parent.parent
BREAK_GLASS = "0000b6a5-0000-4000-8000-00000000b6a5"


def tenant(users: int, *, profiles: bool, simulator: dict[str, Any]) -> dict[str, Any]:
    """The benchmark's tenant: generated users, and the legacy FIDO2 shape or the passkey-profiles one."""
    doc = tenant_doc(users=users, simulator=simulator)
    if profiles:
        migrated = json.loads((ROOT / "graphsim" / "tenants" / "profiles.json").read_text(encoding="utf-8"))
        doc["authenticationMethodConfigurations"] = migrated["authenticationMethodConfigurations"]
    return doc


def document() -> dict[str, Any]:
    """The default document (policy/desired-state.json) with the Conditional Access section the seed asks for:
    report-only, all users but an emergency-access account, all applications."""
    doc = json.loads((ROOT / "policy" / "desired-state.json").read_text(encoding="utf-8"))
    doc.pop("$schema", None)
    doc["conditionalAccess"] = {"displayName": "Require Authenticator passkey", "includeUsers": ["All"],
                                "excludeUsers": [BREAK_GLASS], "includeApplications": ["All"]}
    return doc


def _graph_calls(stats: dict[str, Any]) -> dict[str, int]:
    by_route = stats["calls"]["by_route"]
    return {"requests": int(stats["http_requests"]), "calls": int(stats["calls"]["total"]),
            "writes": int(stats["writes"]), "responses_429": int(stats.get("responses_429", 0)),
            "ca_requests": sum(int(n) for route, n in by_route.items() if "conditional" in route.lower())}


async def run(users: int, *, profiles: bool, seed: int | None, latency: dict[str, float]) -> dict[str, Any]:
    from devhost.stack import local_stack
    from shared.policy.apply import apply_document
    from shared.policy.verify import verify

    bucket_ru, refill = draw_bucket(seed) if seed is not None else (CAPACITY_RU, REFILL_RU_PER_S)
    doc = tenant(users, profiles=profiles, simulator={
        "throttle_capacity_ru": bucket_ru, "throttle_refill_ru_per_s": refill, "notify_paused": True, **latency})
    async with local_stack(doc, settings=BENCH_SETTINGS, serve=False, ensure_store=True) as stack:
        sim, services = stack.sim, stack.services
        knobs = sim.control("GET", "config")
        timings: dict[str, float] = {}
        calls: dict[str, dict[str, int]] = {}
        results: dict[str, Any] = {}
        cpu0 = time.process_time()
        desired = document()
        for step, action in (("apply", lambda: apply_document(services, trigger="bench", document=desired)),
                             ("second_apply", lambda: apply_document(services, trigger="bench", document=desired)),
                             ("verify", lambda: verify(services, trigger="bench"))):
            sim.reset_stats()
            started = time.monotonic()
            results[step] = await action()
            timings[step] = time.monotonic() - started
            calls[step] = _graph_calls(sim.stats())
        cpu = time.process_time() - cpu0
    first, second, report = results["apply"], results["second_apply"], results["verify"]
    ca = calls["apply"]["ca_requests"]
    return {
        "benchmark": "apply", "users": users, "shape": "profiles" if profiles else "legacy",
        "bucket_drawn": {"seed": seed, "capacity_ru": bucket_ru, "refill_ru_per_s": refill}
        if seed is not None else None,
        "simulator_latency": latency, "ca_requests_per_second": float(knobs["ca_requests_per_second"]),
        "apply_result": first.get("result"), "second_apply_result": second.get("result"),
        "verify_compliant": report.get("result") == "passed",
        "verify_failed_checks": [c.get("id") for c in report.get("checks", []) if c.get("status") == "failed"],
        "apply_seconds": round(timings["apply"], 2), "second_apply_seconds": round(timings["second_apply"], 2),
        "verify_seconds": round(timings["verify"], 2),
        "apply_graph": calls["apply"], "second_apply_graph": calls["second_apply"], "verify_graph": calls["verify"],
        "ca_floor_seconds": float(max(0, ca - 1)),
        "cpu_seconds": round(cpu, 2), "peak_rss_mb": peak_rss_mb(), "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--profiles", action="store_true", help="a tenant migrated to passkey profiles")
    parser.add_argument("--random-bucket", action="store_true",
                        help="draw the simulator's bucket capacity and refill from --seed (the product is not told)")
    parser.add_argument("--seed", type=int, default=0, help="the draw's seed, with --random-bucket")
    args = parser.parse_args(argv)
    users = min(args.users, 60) if args.smoke else args.users
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = asyncio.run(run(users, profiles=args.profiles, seed=args.seed if args.random_bucket else None,
                             latency=latency_knobs(args)))
    emit(result, as_json=args.json)
    done = (result["apply_result"] == "applied" and result["second_apply_graph"]["writes"] == 0
            and result["verify_compliant"])
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
