"""The under-load runner: N runs in a row, stopping at the first failure, with the report written after each run."""
from __future__ import annotations

import json
from pathlib import Path

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
