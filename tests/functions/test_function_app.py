"""function_app.py indexes, in the worker's own indexer and in the library, with the bindings we mean."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.config import APP_SETTINGS, PASSKEY_READS_QUEUE, POLICY_JOBS_QUEUE, QUEUE_NAME, STATE_STORAGE

ROOT = Path(__file__).resolve().parents[2]
INDEX_PYTHON = ROOT / ".venv-index" / "bin" / "python"
INDEXER = Path(__file__).with_name("worker_index.py")
EXPECTED = {
    "health", "health_details", "runs_list", "policy_verify", "policy_plan", "policy_apply", "policy_enforcement",
    "graph_notifications", "graph_lifecycle", "tickets", "flags_list", "flags_export", "upn_events",
    "upn_processor", "delta_sweep", "reregistration_tracker", "subscription_manager", "flags_approve_removal",
    "run_get", "policy_jobs", "events_purge", "passkey_reads",
}


def worker_index(app_dir: Path) -> tuple[int, dict]:
    assert INDEX_PYTHON.exists(), "run `make test` (it builds .venv-index with azure-functions-runtime)"
    done = subprocess.run([str(INDEX_PYTHON), str(INDEXER), str(app_dir)], capture_output=True, text=True,
                          timeout=600, cwd=app_dir)
    last = (done.stdout.strip().splitlines() or ["{}"])[-1]
    return done.returncode, json.loads(last)


def app_copy(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the app with one edit in function_app.py (the edit must apply)."""
    shutil.copy(ROOT / "function_app.py", tmp_path / "function_app.py")
    shutil.copytree(ROOT / "shared", tmp_path / "shared", ignore=shutil.ignore_patterns("__pycache__"))
    source = (tmp_path / "function_app.py").read_text()
    assert old in source, f"mutation target not found: {old}"
    (tmp_path / "function_app.py").write_text(source.replace(old, new, 1))
    return tmp_path


def test_the_worker_indexes_every_function():
    """The Python worker's own indexer loads function_app.py and finds every function."""
    code, result = worker_index(ROOT)
    assert code == 0, result
    assert set(result["functions"]) == EXPECTED


@pytest.mark.parametrize(("old", "new"), [
    ('arg_name="timer"', 'arg_name="tick"'),                              # arg_name is not a parameter
    ("async def upn_processor(msg: func.QueueMessage)", "async def upn_processor(msg: func.HttpRequest)"),
    ('@app.route(route="flags", methods=["GET"])', '@app.route(route="flags", methods=["GET"])\n'
                                                     '@app.route(route="flags2", methods=["GET"])'),
])
def test_a_broken_binding_fails_indexing(tmp_path, old, new):
    """Breaking a binding in function_app.py makes the worker's indexer refuse the app."""
    code, result = worker_index(app_copy(tmp_path, old, new))
    assert code != 0 and "error" in result


def _trigger(fn) -> dict:
    return next(b for b in fn.get_bindings_dict()["bindings"] if b["type"].endswith("Trigger"))


def test_timers_read_their_schedule_from_app_settings(functions):
    """Every timer's schedule is a %SETTING% that the app settings (and so Bicep) define."""
    timers = {n: _trigger(fn) for n, fn in functions.items() if _trigger(fn)["type"] == "timerTrigger"}
    assert set(timers) == {"policy_enforcement", "delta_sweep", "reregistration_tracker", "subscription_manager",
                           "events_purge"}
    for function, trigger in timers.items():
        name = re.fullmatch(r"%(\w+)%", trigger["schedule"])
        assert name and name.group(1) in APP_SETTINGS
        # Only the subscription manager runs at start-up (a new deployment subscribes at once, under a lease).
        assert bool(trigger.get("runOnStartup")) is (function == "subscription_manager")


def test_queue_trigger_reads_the_change_queue_with_the_state_connection(functions):
    """The processor reads `upn-changes` through the STATE_STORAGE identity-based connection."""
    trigger = _trigger(functions["upn_processor"])
    assert trigger["type"] == "queueTrigger"
    assert trigger["queueName"] == QUEUE_NAME and trigger["connection"] == STATE_STORAGE


def test_policy_jobs_read_their_queue_with_the_state_connection(functions):
    """HTTP plan/apply jobs run from `policy-jobs` through the same STATE_STORAGE connection."""
    trigger = _trigger(functions["policy_jobs"])
    assert trigger["type"] == "queueTrigger"
    assert trigger["queueName"] == POLICY_JOBS_QUEUE and trigger["connection"] == STATE_STORAGE


def test_the_slow_lane_reads_its_queue_with_the_state_connection(functions):
    """The slow lane's passkey reads run from `passkey-reads` through the same STATE_STORAGE connection."""
    trigger = _trigger(functions["passkey_reads"])
    assert trigger["type"] == "queueTrigger"
    assert trigger["queueName"] == PASSKEY_READS_QUEUE and trigger["connection"] == STATE_STORAGE


def test_importing_the_app_builds_no_clients():
    """Indexing imports no SDK and no pydantic: clients are built and models imported lazily, on first use."""
    code = ("import sys, function_app; print(sorted(m for m in ('msgraph', 'azure.data.tables', 'azure.identity', "
            "'pydantic') if m in sys.modules))")
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
