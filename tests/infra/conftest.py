"""Fixtures for the offline infra tests: one checkov run per session and mutable copies of infra/."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
REPO_ROOT = _HERE.parents[1]
for _path in (REPO_ROOT, _HERE):  # `shared` and `bicep_checks` importable however pytest is started
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import bicep_checks  # noqa: E402
from bicep_checks import CheckovRun, Mutate  # noqa: E402


def checkov_bin() -> Path:
    """checkov from CHECKOV_BIN, else the repo's .venv-checkov (built as the Makefile does)."""
    return Path(os.environ.get("CHECKOV_BIN", REPO_ROOT / ".venv-checkov" / "bin" / "checkov"))


@pytest.fixture(scope="session")
def checkov_run(tmp_path_factory: pytest.TempPathFactory) -> CheckovRun:
    """Run checkov once on a copy of infra/ without .checkov.yaml (checkov would apply it on its own),
    so the tests see every failure and can tell a needed skip from a stale one."""
    binary = checkov_bin()
    assert binary.is_file(), (f"checkov not found at {binary}: python3.11 -m venv .venv-checkov && "
                              ".venv-checkov/bin/pip install checkov==3.3.30 && "
                              ".venv-checkov/bin/pip install --no-deps pycep-parser==0.7.1")
    work = tmp_path_factory.mktemp("checkov")
    infra = work / "infra"
    shutil.copytree(bicep_checks.INFRA_DIR, infra)
    (infra / ".checkov.yaml").unlink()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(work),  # no ~/.checkov.yaml
        "CKV_PARSE_ERROR_FAIL": "true",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    proc = subprocess.run(
        [str(binary), "-d", str(infra), "--framework", "bicep", "--skip-download", "--compact", "--quiet",
         "-o", "json"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"checkov printed no JSON report (exit {proc.returncode}): "
                             f"{proc.stderr[-2000:]}") from exc
    if isinstance(report, list):  # several frameworks → a list; we ask for bicep only
        report = next(r for r in report if r.get("check_type") == "bicep")
    return CheckovRun(proc.returncode, report, proc.stderr)


@pytest.fixture
def mutate(tmp_path: Path) -> Mutate:
    """Copy infra/ (and azure.yaml, docs/deployment.md) into tmp_path and replace `old` with `new` in
    one file of the copy; returns the copied infra directory. Fails if `old` is not in the file, so a
    mutation test cannot pass because the template changed under it."""
    infra = tmp_path / "infra"
    shutil.copytree(bicep_checks.INFRA_DIR, infra)
    shutil.copy2(REPO_ROOT / "azure.yaml", tmp_path / "azure.yaml")
    (tmp_path / "docs").mkdir()
    shutil.copy2(REPO_ROOT / "docs" / "deployment.md", tmp_path / "docs" / "deployment.md")

    def apply(relative: str, old: str, new: str, *, count: int = 1) -> Path:
        path = tmp_path / relative
        text = path.read_text(encoding="utf-8")
        assert text.count(old) >= count, f"mutation target {old!r} not found in {relative}"
        path.write_text(text.replace(old, new, count), encoding="utf-8")
        return infra

    return apply
