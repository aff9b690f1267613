"""Each benchmark runs once with tiny sizes and prints one JSON object with the keys the README table
needs. Correctness only (every flag written, nothing lost); timings are never asserted here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", f"bench.{module}", "--json", "--smoke", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout[-2000:]
    result = json.loads(lines[0])
    assert isinstance(result, dict)
    return result


def test_mass_rename_flags_every_renamed_passkey_holder_through_the_queue() -> None:
    """The smoke mass rename writes exactly the expected flags via sweep, queue and processors."""
    result = run_bench("mass_rename")
    for key in ("seconds", "optimum_seconds", "ratio_to_optimum", "graph_requests_per_user", "cpu_ms_per_user",
                "peak_rss_mb", "flags_written", "flags_expected", "users", "throttle_scale", "resource_units",
                "baseline_ratio", "responses_429"):
        assert key in result, key
    assert result["users"] == 120 and result["changed_users"] == 120
    assert result["flags_expected"] > 0
    assert result["flags_written"] == result["flags_expected"] == result["flags_reported"]
    assert result["missed"] == result["unexpected"] == result["duplicates"] == 0  # by user id and new UPN
    assert result["optimum_bound"] in ("ru", "auth_methods", "delta_chain", "report")
    # Every user of a sweep message changed, so each feeds the slow lane one message of its users' passkey reads.
    assert result["messages"] == 2 * result["sweep_messages"] and result["requeued_messages"] == 0
    # The seeding sweep built the holders index from the report: every holder was flagged without a passkey read,
    # and the slow lane completed every flag's details.
    assert result["holders_listed"] == result["flags_expected"] and result["details_pending"] == 0
    assert result["holders_flagged_seconds"] <= result["details_complete_seconds"]
    assert result["resource_units"] >= result["users"]  # one fido2Methods read per renamed user, at least


def test_mass_rename_draws_a_bucket_the_product_is_not_told() -> None:
    """`--random-bucket --seed S` draws the simulator's bucket from the seed and records it in the output only."""
    from bench.mass_rename import draw_bucket

    result = run_bench("mass_rename", "--random-bucket", "--seed", "3")
    capacity, refill = draw_bucket(3)
    assert result["bucket_drawn"] == {"seed": 3, "capacity_ru": capacity, "refill_ru_per_s": refill}
    assert (result["bucket_capacity_ru"], result["refill_ru_per_s"]) == (capacity, refill)
    assert draw_bucket(3) == (capacity, refill) != draw_bucket(4)
    assert result["flags_written"] == result["flags_expected"] == result["flags_reported"]


def test_mass_rename_with_processor_processes_flags_every_holder_once() -> None:
    """`--instances 2`: the sweep and two queue processors, each its own OS process with its own paces, write
    exactly the expected flags, and each processor reports what it did."""
    result = run_bench("mass_rename", "--instances", "2", "--baseline-sample", "0")
    assert result["instances_run"] == 2 and len(result["instances"]) == 2
    assert len({i["pid"] for i in result["instances"]}) == 2
    assert sum(i["messages"] for i in result["instances"]) == result["messages"] >= result["sweep_messages"]
    assert result["flags_written"] == result["flags_expected"] == result["flags_reported"] > 0


@pytest.mark.parametrize(("module", "keys"), [
    ("cold_start", ("import_index_seconds", "bare_import_seconds", "ratio_to_bare_import", "first_verify_seconds")),
    ("state_writes", ("batched_entities_per_s", "single_entities_per_s", "ratio", "entities")),
    ("webhook_ack", ("p50_ms", "p99_ms", "notifications", "messages_queued")),
])
def test_each_benchmark_prints_its_figures(module: str, keys: tuple[str, ...]) -> None:
    """Cold start, state writes and webhook ack each print one JSON object with their figures."""
    result = run_bench(module)
    assert result["benchmark"] == module
    for key in (*keys, "machine"):
        assert key in result, key
    if module == "webhook_ack":
        assert result["messages_queued"] >= result["notifications"]  # every acknowledged user was queued


def test_apply_applies_the_seed_once_and_a_second_apply_writes_nothing() -> None:
    """The smoke apply (legacy and profiles shape) is applied and read back, the second apply writes nothing,
    and verify passes, with Conditional Access calls counted at Graph's one a second."""
    for shape in ([], ["--profiles"]):
        result = run_bench("apply", *shape)
        assert result["shape"] == ("profiles" if shape else "legacy")
        assert result["apply_result"] == "applied" and result["verify_compliant"], result
        assert result["apply_graph"]["writes"] > 0 and result["apply_graph"]["ca_requests"] > 0
        assert result["second_apply_result"] == "no-op" and result["second_apply_graph"]["writes"] == 0
        assert result["ca_requests_per_second"] == 1.0


def test_the_readme_table_names_commit_conditions_targets_and_machine() -> None:
    """run_all renders a table row per figure with its target, headed by the commit, the date, the machine and
    the conditions the benchmarks recorded (latency, drawn bucket, limits, load)."""
    from bench.run_all import conditions, table

    box = {"cpu": "Test CPU", "cores": 2, "ram_gib": 4.0, "python": "3.11.7", "os": "Linux"}
    rename = {"benchmark": "mass_rename", "users": 100, "throttle_scale": 1.0, "seconds": 10.0, "optimum_seconds": 9.5,
              "ratio_to_optimum": 0.95, "cpu_ms_per_user": 0.5, "graph_requests_per_user": 0.055,
              "resource_units_per_user": 1.0, "responses_429": 0, "flags_written": 5, "flags_expected": 6,
              "peak_rss_mb": 80.0, "baseline_ratio": 3.0, "auth_methods_rps": 6.0,
              "bucket_drawn": {"seed": 1, "capacity_ru": 5000.0, "refill_ru_per_s": 400.0}}
    latency = {"latency_ms": 150.0, "latency_p99_ms": 800.0, "latency_per_item_ms": 2.0}
    text = table([rename], box, conditions([rename], latency, [1.5, 2.25]))
    assert "Test CPU, 2 cores, 4.0 GiB RAM, Python 3.11.7" in text
    assert "at commit " in text and "median 150 ms, p99 800 ms" in text
    assert "seed 1: 5,000 RU refilled at 400.0 RU/s" in text and "limited to 6 a second" in text
    assert "load average (1 min) 1.5 to 2.2" in text
    assert "flags written 5 of 6" in text and "| **no** |" in text
    assert "ratio 0.95 | >= 0.9 | yes |" in text
