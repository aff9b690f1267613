"""`python -m shared.schemas [--check]`: `--check` names each stale generated file and writes nothing; without
it the stale files are rewritten from the models. Run on a copy of the tree, so the committed files stay put."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from shared.schemas import __main__ as schemas_cli
from shared.schemas.generate import OPENAPI_FILE, SCHEMA_FILE

ROOT = Path(__file__).resolve().parents[2]


def test_check_mode_writes_nothing_and_passes_when_current() -> None:
    """`python -m shared.schemas --check` exits 0 on the committed tree."""
    assert schemas_cli.main(["--check"]) == 0


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the generated files in `tmp_path`, which the command then takes for the repository root."""
    for relative in (SCHEMA_FILE, OPENAPI_FILE):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / relative, tmp_path / relative)
    monkeypatch.setattr(schemas_cli, "__file__", str(tmp_path / "shared" / "schemas" / "__main__.py"))
    return tmp_path


def test_check_mode_names_a_stale_file_and_leaves_it(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A schema that is not what the models give: `--check` exits 1 and prints `stale: <file>`, file unchanged."""
    stale = tree / SCHEMA_FILE
    stale.write_text("{}\n", encoding="utf-8")
    assert schemas_cli.main(["--check"]) == 1
    assert capsys.readouterr().out.splitlines() == [f"stale: {SCHEMA_FILE}"]
    assert stale.read_text(encoding="utf-8") == "{}\n"


def test_without_check_the_stale_files_are_rewritten(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without `--check` each stale file is written from the models (exit 0, `wrote: <file>`); the current one is
    left alone, and a check afterwards passes."""
    committed = (ROOT / SCHEMA_FILE).read_text(encoding="utf-8")
    (tree / SCHEMA_FILE).write_text("{}\n", encoding="utf-8")
    assert schemas_cli.main([]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote: {SCHEMA_FILE}"]
    assert (tree / SCHEMA_FILE).read_text(encoding="utf-8") == committed
    assert schemas_cli.main(["--check"]) == 0 and capsys.readouterr().out == ""
