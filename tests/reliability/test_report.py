"""The figures pipeline: tests record into the summary file, the report sums them, the README shows them."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import report, summary


def test_records_are_summed_by_kind_and_outcome(tmp_path: Path) -> None:
    """Two records: faults add up by kind, runs and survivors by area, inputs, refusals and losses in total."""
    path = tmp_path / "summary.json"
    summary.record("a", area="storm", faults={"429": 3, "drop": 1}, runs=2, survived=2, path=path)
    summary.record("b", area="fuzz", faults={"429": 2}, bad_inputs=10, rejected=7, data_lost=1, path=path)
    summary.record("a", area="storm", faults={"429": 4}, runs=1, survived=0, path=path)  # replaces a's entry
    totals = report.totals(summary.load(path)["tests"])
    assert totals["faults"]["429"] == 6 and totals["faults"]["drop"] == 0
    assert (totals["runs"], totals["survived"]) == (1, 0)
    assert (totals["badInputs"], totals["rejected"], totals["dataLost"]) == (10, 7, 1)
    text = report.render(summary.load(path))
    assert "| Graph 429 with Retry-After (injected) | 6 | a, b |" in text
    assert "| 0 of 1 |" in text and "| 7 of 10 |" in text and "| 1 |" in text.splitlines()[-3]


def test_failed_attempts_are_apart_and_a_run_that_did_not_survive_shows(tmp_path: Path) -> None:
    """Five attempts: two stopped cleanly with our error and were re-run (reported on their own line), two
    completed right and one completed wrong: the survival line reads 2 of 3, not 5 of 5."""
    path = tmp_path / "summary.json"
    summary.record("s", area="storm", faults={"latency": 4}, runs=5, failed=2, survived=2, data_lost=1, path=path)
    text = report.render(summary.load(path))
    assert "(storm 2/3) | 2 of 3 |" in text
    assert "run again (apart from the runs above) | 2 |" in text


def test_impossible_figures_are_refused(tmp_path: Path) -> None:
    """More survivors and failures than runs, or more rejections than bad inputs, is a counting bug: refused."""
    with pytest.raises(ValueError):
        summary.record("x", area="storm", runs=2, survived=2, failed=1, path=tmp_path / "s.json")
    with pytest.raises(ValueError):
        summary.record("x", area="fuzz", bad_inputs=3, rejected=4, path=tmp_path / "s.json")


def test_unknown_fault_kinds_are_refused(tmp_path: Path) -> None:
    """A typo in a fault kind fails the recording test instead of vanishing from the figures."""
    with pytest.raises(ValueError):
        summary.record("x", area="storm", faults={"4299": 1}, path=tmp_path / "s.json")


def test_the_readme_table_is_replaced_between_its_markers(tmp_path: Path) -> None:
    """--write-readme replaces only what is between the markers; the README has them in its Reliability
    section, before Deployment."""
    readme = tmp_path / "README.md"
    readme.write_text(f"# X\n\n## Reliability\n\n{report.BEGIN}\nold\n{report.END}\n\n## Deployment\n")
    assert report.write_readme("| new |\n", readme)
    assert readme.read_text() == f"# X\n\n## Reliability\n\n{report.BEGIN}\n| new |\n{report.END}\n\n## Deployment\n"
    real = report.README.read_text(encoding="utf-8")
    assert real.index("## Reliability") < real.index(report.BEGIN) < real.index(report.END) < real.index(
        "## Deployment")


def test_the_footer_names_the_commit_and_machine_of_the_runs(tmp_path: Path) -> None:
    """Each record carries the commit it ran at; two records at different commits both show in the footer."""
    path = tmp_path / "summary.json"
    summary.record("a", area="storm", runs=1, survived=1, path=path)
    data = summary.load(path)
    data["tests"]["b"] = {**data["tests"]["a"], "commit": "0123456789ab"}
    text = report.render(data)
    assert f"at commit {', '.join(sorted({summary.commit(), '0123456789ab'}))}," in text
    assert summary.machine() in text
