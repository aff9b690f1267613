"""What every benchmark shares: the machine it ran on, tenant documents and app settings for the local
stack (`devhost.stack`: Azurite + Graph simulator with the product's own Services), peak RSS, and
printing one JSON object.

Benchmarks run the product's real code paths against Azurite and the simulator; both are separate
processes, so `time.process_time()` and `ru_maxrss` here measure our process alone.

Graph is never instant: every simulator a benchmark starts answers with the realistic latency preset
(`graphsim.config.REALISTIC_LATENCY`: a log-normal wait with a 150 ms median and an 800 ms p99, plus 2 ms
per object of a page or request of a `$batch`) unless `--latency-ms`, `--latency-p99-ms` or
`--latency-per-item-ms` say otherwise (`--latency-ms 0 --latency-per-item-ms 0` for the old instant
simulator).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from graphsim.config import REALISTIC_LATENCY

YUBI = "cb69481e-8ff7-4039-93ec-0a2729a154a8"
ROOT = Path(__file__).resolve().parent.parent


def commit(digits: int = 40) -> str:
    """The checked-out commit (`digits` hex digits), with `+dirty` when tracked files differ from it."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    sha = git("rev-parse", f"--short={digits}", "HEAD") or "unknown"
    return sha + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM and Python version of this machine (for the README table)."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_gib = 0.0
    try:
        ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        pass
    return {"cpu": model, "cores": os.cpu_count() or 0, "ram_gib": round(ram_gib, 1),
            "python": platform.python_version(), "os": platform.system()}


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1024 if sys.platform != "darwin" else peak / 2**20, 1)


def emit(result: dict[str, Any], *, as_json: bool) -> None:
    """Print the result: one JSON object on stdout (`--json`), or readable key: value lines."""
    if as_json:
        sys.stdout.write(json.dumps(result, separators=(",", ":"), sort_keys=True) + "\n")
    else:
        for key, value in result.items():
            sys.stdout.write(f"{key}: {value}\n")
    sys.stdout.flush()


def base_parser(description: str, *, graph: bool = True) -> argparse.ArgumentParser:
    """An argument parser with `--json` (one JSON object on stdout) and `--smoke` (tiny, for tests), and
    for a benchmark that talks to the Graph simulator (`graph`) the latency flags, defaulting to the
    realistic preset."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    if graph:
        parser.add_argument("--latency-ms", type=float, default=REALISTIC_LATENCY["latency_ms"],
                            help="median Graph latency in ms (default %(default)s; 0: no drawn wait)")
        parser.add_argument("--latency-p99-ms", type=float, default=REALISTIC_LATENCY["latency_p99_ms"],
                            help="99th-percentile Graph latency in ms (default %(default)s)")
        parser.add_argument("--latency-per-item-ms", type=float, default=REALISTIC_LATENCY["latency_per_item_ms"],
                            help="ms added per object of a page or request of a $batch (default %(default)s)")
    return parser


def latency_knobs(args: argparse.Namespace | None = None) -> dict[str, float]:
    """The simulator's latency knobs from the parsed flags (the realistic preset without `args`)."""
    if args is None:
        return dict(REALISTIC_LATENCY)
    return {"latency_ms": args.latency_ms, "latency_p99_ms": args.latency_p99_ms,
            "latency_per_item_ms": args.latency_per_item_ms}


def tenant_doc(*, users: int = 0, explicit_users: list[dict[str, Any]] | None = None,
               simulator: dict[str, Any] | None = None, passkey_ratio: float = 0.5) -> dict[str, Any]:
    """A simulator tenant: `users` generated users (about `passkey_ratio` with a passkey) and a FIDO2 policy.

    The simulator answers with the realistic latency preset unless `simulator` sets the latency knobs
    (benchmarks pass `latency_knobs(args)`)."""
    doc: dict[str, Any] = {
        "tenantId": str(uuid.uuid4()), "users": explicit_users or [], "groups": [],
        "domains": ["contoso.example", "fabrikam.example"],
        "authenticationMethodConfigurations": {"fido2": {
            "@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration", "id": "Fido2",
            "state": "enabled", "isSelfServiceRegistrationAllowed": True, "isAttestationEnforced": False,
            "keyRestrictions": {"isEnforced": True, "enforcementType": "allow", "aaGuids": [YUBI]},
            "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": False}],
            "excludeTargets": []}},
        "authenticationStrengthPolicies": [], "conditionalAccessPolicies": [],
        "simulator": {**REALISTIC_LATENCY, **(simulator or {})},
    }
    if users:
        doc["generate"] = {"users": users, "passkeyRatio": passkey_ratio, "domain": "contoso.example", "seed": 7}
    return doc


#: The app settings every benchmark adds to `devhost.stack.stack_settings`.
BENCH_SETTINGS = {"GRAPH_DEV_TOKEN": "bench-token",
                  "NOTIFICATION_CLIENT_STATE": "ys1_vU4P5HvCOLXhb5V5giU3Mb1IvTIB4gedHm6u",
                  "TICKET_WEBHOOK_SECRET": "59zud9TbYTfz0uCUoXem8DrwGejR0SdvqAJQAjBL"}


def settings_env(azurite: Any, sim: Any, tenant_id: str, **extra: str) -> dict[str, str]:
    """App settings for the product against this Azurite and simulator."""
    from devhost.stack import stack_settings

    return stack_settings(azurite, sim, tenant_id, **{**BENCH_SETTINGS, **extra})
