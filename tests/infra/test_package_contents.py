"""The deployment package: .funcignore keeps secrets, local state, dev tools and tests out, and the app in.

devhost.package applies .funcignore the way the packagers do (gitignore rules) to the repo's tracked files;
here also to files a developer's checkout holds besides, which a packager reading the folder would see.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from bicep_checks import REPO_ROOT

from devhost.package import excluded, main, package_files, tracked_files

# What a working checkout holds besides the tracked files: none of it may be deployed.
LOCAL_FILES = [
    ".reliability/summary.json",
    ".reliability/soak.json",
    "devcert.pem",
    "infra/certs/client.pem",
    "shared/stray-key.pem",
    ".env",
    ".env.local",
    ".venv/lib/python3.11/site-packages/azure/core/__init__.py",
    ".venv-checkov/bin/checkov",
    ".venv-index/bin/python",
    ".venv-lock/bin/uv",
    "venv/bin/python",
    "requirements.in",
    "requirements-dev.in",
    "app.zip",
    "bench/out/results.json",
    "shared/__pycache__/config.cpython-311.pyc",
    "shared/upn/__pycache__/service.cpython-311.pyc",
    ".pytest_cache/v/cache/lastfailed",
    ".mypy_cache/3.11/shared/config.data.json",
    ".ruff_cache/0.17.5/123",
    ".hypothesis/examples/abc",
    "tests/test_config.py",
    "local.settings.json",
    ".azurite/__azurite_db_queue__.json",
    ".demo/state.json",
    ".azure/dev/.env",
]
MUST_SHIP = ["function_app.py", "host.json", "requirements.txt", "shared/__init__.py", "shared/config.py"]


def test_the_matcher_follows_gitignore_rules() -> None:
    """The helper itself: directory patterns at any depth, anchored paths, globs within one name, negation."""
    patterns = ["bench/out/", "*.pem", ".venv*/", "tests/", "!keep.pem"]
    assert excluded("bench/out/x.json", patterns) and not excluded("shared/bench/out.py", patterns)
    assert excluded("a/b/c.pem", patterns) and not excluded("keep.pem", patterns)
    assert excluded(".venv-x/bin/python", patterns) and not excluded(".venvfile", patterns)
    assert excluded("tests/unit/test_a.py", patterns) and not excluded("shared/tests.py", patterns)


def test_the_package_holds_no_secret_local_state_or_dev_tool() -> None:
    """Secrets (*.pem, .env), local state, virtual environments, .in files, caches, bench output and tests
    stay out of the deployment package."""
    files = tracked_files() + LOCAL_FILES
    shipped = set(package_files(files, REPO_ROOT / ".funcignore"))
    leaked = sorted(path for path in shipped if path in LOCAL_FILES)
    assert leaked == []
    assert not [path for path in shipped if path.startswith(("tests/", "bench/", "infra/", "graphsim/", "devhost/"))]


def test_the_package_holds_the_app() -> None:
    """function_app.py, host.json, the app lock and all of shared/ are deployed."""
    files = tracked_files() + LOCAL_FILES
    shipped = set(package_files(files, REPO_ROOT / ".funcignore"))
    assert set(MUST_SHIP) <= shipped
    shared = {path for path in tracked_files() if path.startswith("shared/")}
    assert shared and shared <= shipped


def test_the_zip_for_config_zip_deploys_the_app_only(tmp_path: Path) -> None:
    """`python -m devhost.package app.zip` writes the app (function_app.py, host.json, the lock, shared/) and
    nothing .funcignore keeps out."""
    out = tmp_path / "app.zip"
    assert main([str(out)]) == 0
    names = set(zipfile.ZipFile(out).namelist())
    assert set(MUST_SHIP) <= names
    assert not [n for n in names if n.startswith(("tests/", "infra/", ".ci/")) or n.endswith((".in", ".pem"))]
