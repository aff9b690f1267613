"""Cold start: how long a fresh worker process needs before it can serve, against a bare import.

    python -m bench.cold_start --json [--runs 7]

Each figure is the median over `--runs` fresh processes, measured by the parent from spawn to exit
(interpreter start-up included on both sides):
- `import_index_seconds`: `import function_app` and `app.get_functions()` (what the worker does
  before the 30-s app-initialisation time-out);
- `bare_import_seconds`: `import azure.functions` alone (the baseline: any Python function app pays it);
- `first_verify_seconds`: import, index, then the first `policy_verify` answered end to end (services
  built, msgraph-sdk loaded, Graph read from the simulator, the run stored in Azurite, both started
  beforehand).
`ratio_to_bare_import` = import_index_seconds / bare_import_seconds (target <= 2).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import base_parser, emit, latency_knobs, machine, settings_env
from devhost.stack import loopback

ROOT = Path(__file__).resolve().parent.parent

BARE = "import azure.functions"
INDEX = "import function_app; function_app.app.get_functions()"
VERIFY = """
import asyncio, json, function_app
import azure.functions as func
from shared.principal import READER_ROLE, encode_principal
function_app.app.get_functions()
req = func.HttpRequest(method="POST", url="http://localhost/api/policy/verify", body=b"",
                       headers={"X-MS-CLIENT-PRINCIPAL": encode_principal([READER_ROLE])})
resp = asyncio.run(function_app.policy_verify(req))
assert resp.status_code == 200, (resp.status_code, resp.get_body()[:500])
"""


def spawn_seconds(code: str, env: dict[str, str] | None = None) -> float:
    """Wall seconds of a fresh `python -c code` from spawn to exit (fails loudly if the code fails)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"cold-start child failed: {done.stderr[-2000:]}")
    return elapsed


def median_of(code: str, runs: int, env: dict[str, str] | None = None) -> tuple[float, list[float]]:
    samples = [spawn_seconds(code, env) for _ in range(runs)]
    return statistics.median(samples), samples


def run(runs: int, latency: dict[str, float] | None = None) -> dict[str, Any]:
    import json

    latency = latency if latency is not None else latency_knobs()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)
    spawn_seconds(INDEX, env)  # compile the .pyc files once, as a deployed package ships them
    # Interleave the two so drift on a shared machine hits both alike.
    bare: list[float] = []
    index: list[float] = []
    for _ in range(runs):
        bare.append(spawn_seconds(BARE, env))
        index.append(spawn_seconds(INDEX, env))
    demo = json.loads((ROOT / "graphsim" / "tenants" / "demo.json").read_text(encoding="utf-8"))
    demo.setdefault("simulator", {}).update(**latency)
    with loopback(demo) as (azurite, sim):
        # As behind App Service Authentication: the platform's flag, and the reader's principal in VERIFY.
        verify_env = {**env, **settings_env(azurite, sim, demo["tenantId"]), "WEBSITE_AUTH_ENABLED": "True"}
        spawn_seconds(VERIFY, verify_env)  # creates the tables once, like a deployed app's template would
        verify_median, verify = median_of(VERIFY, runs, verify_env)
    bare_median, index_median = statistics.median(bare), statistics.median(index)
    return {
        "benchmark": "cold_start", "runs": runs,
        "import_index_seconds": round(index_median, 3), "bare_import_seconds": round(bare_median, 3),
        "ratio_to_bare_import": round(index_median / bare_median, 3),
        "first_verify_seconds": round(verify_median, 3), "simulator_latency": latency,
        "samples": {"import_index": [round(x, 3) for x in index], "bare_import": [round(x, 3) for x in bare],
                    "first_verify": [round(x, 3) for x in verify]},
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    result = run(1 if args.smoke else max(1, args.runs), latency_knobs(args))
    emit(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
