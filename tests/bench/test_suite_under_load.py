"""The under-load runner: N runs in a row, stopping at the first failure, with the report written after each run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import suite_under_load


def test_report_is_written_after_each_run_and_the_series_stops_at_the_first_failure(tmp_path: Path) -> None:
    """A file that passes on its first run and fails on its second: the report shows one pass, then the failure."""
    marker = tmp_path / "ran-once"
    test_file = tmp_path / "test_flaky_once.py"
    test_file.write_text(
        "from pathlib import Path\n"
        f"MARKER = Path({str(marker)!r})\n"
        "def test_passes_only_the_first_time():\n"
        "    first = not MARKER.exists()\n"
        "    MARKER.touch()\n"
        "    assert first\n", encoding="utf-8")
    report_path = tmp_path / "under-load.json"

    status = suite_under_load.main(["--runs", "3", "--burners", "0", "--report", str(report_path),
                                    "--", str(test_file), f"--rootdir={tmp_path}"])

    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert status == 1
    assert [run["passed"] for run in report["runs"]] == [True, False]
    assert report["passedInARow"] == 1 and report["allPassed"] is False and report["finished"] is True


def test_a_series_in_progress_is_marked_unfinished(tmp_path: Path) -> None:
    """The report written after a run in the middle of the series says so."""
    report = {"runsWanted": 3, "runs": [{"run": 1, "passed": True}]}
    path = tmp_path / "r.json"

    suite_under_load.write_report(path, report, finished=False)

    written = json.loads(path.read_text(encoding="utf-8"))
    assert written["finished"] is False and written["passedInARow"] == 1 and written["allPassed"] is False


def test_a_stopped_series_of_the_same_commit_resumes_and_a_changed_one_starts_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--resume goes on after the passing runs of an unfinished series of this commit, machine and conditions;
    a series of another commit starts from run 1, and an uncommitted tree never resumes."""
    monkeypatch.setattr(suite_under_load, "commit", lambda: "c" * 40)
    test_file = tmp_path / "test_ok.py"
    test_file.write_text("def test_ok():\n    assert True\n", encoding="utf-8")
    report_path = tmp_path / "under-load.json"
    args = ["--runs", "3", "--burners", "0", "--report", str(report_path), "--resume", "--",
            str(test_file), f"--rootdir={tmp_path}"]
    earlier = {"commit": "c" * 40, "machine": suite_under_load.machine(), "started": "earlier",
               "conditions": {"burners": 0, "burnerPriority": "normal (nice 0)",
                              "command": f"python -m pytest -q -p no:cacheprovider {test_file} --rootdir={tmp_path}"},
               "runsWanted": 3, "runs": [{"run": 1, "passed": True, "seconds": 1.0, "summary": "1 passed"}]}

    def series(commit: str) -> dict:
        suite_under_load.write_report(report_path, {**earlier, "commit": commit, "runs": list(earlier["runs"])},
                                      finished=False)
        assert suite_under_load.main(args) == 0
        return json.loads(report_path.read_text(encoding="utf-8"))

    report = series("c" * 40)
    assert [run["run"] for run in report["runs"]] == [1, 2, 3] and report["started"] == "earlier"
    assert len(report["resumedAt"]) == 1 and report["allPassed"] and report["finished"]
    for other in ("another", "c" * 40 + "-dirty"):
        if other.endswith("dirty"):
            monkeypatch.setattr(suite_under_load, "commit", lambda dirty=other: dirty)
        report = series(other)
        assert report["started"] != "earlier" and "resumedAt" not in report
        assert [run["run"] for run in report["runs"]] == [1, 2, 3]
