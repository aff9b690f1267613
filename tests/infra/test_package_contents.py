"""The deployment package: .funcignore keeps secrets, local state, dev tools and tests out, and the app in.

`package()` applies .funcignore the way the packagers do (gitignore rules: `dir/` matches a directory at any
depth, a pattern with an inner `/` is anchored at the root, otherwise it matches a name at any depth, and
everything under an excluded directory is excluded) to the repo's files plus files a developer's checkout has.
"""
from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path

from bicep_checks import REPO_ROOT

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


def _patterns(funcignore: Path) -> list[str]:
    """The patterns of a .funcignore, without comments and blank lines."""
    lines = (line.strip() for line in funcignore.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _matches(pattern: str, parts: list[str], is_dir: bool) -> bool:
    """Whether one gitignore pattern matches the path `parts` (a directory when is_dir)."""
    dir_only = pattern.endswith("/")
    body = pattern.strip("/")
    if dir_only and not is_dir:
        return False
    if "/" in pattern.rstrip("/"):  # anchored at the root
        depth = body.count("/") + 1
        return len(parts) == depth and fnmatch.fnmatchcase("/".join(parts), body)
    return fnmatch.fnmatchcase(parts[-1], body)


def excluded(path: str, patterns: list[str]) -> bool:
    """Whether .funcignore keeps `path` (a file, repo-relative, posix) out: it or one of its directories matches."""
    parts = path.split("/")
    for end in range(1, len(parts) + 1):
        is_dir = end < len(parts)
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if _matches(pattern.removeprefix("!"), parts[:end], is_dir):
                verdict = not negated
        if verdict:
            return True
    return False


def package(files: list[str], funcignore: Path) -> set[str]:
    """The files a packager honouring `funcignore` would deploy."""
    patterns = _patterns(funcignore)
    return {path for path in files if not excluded(path, patterns)}


def _repo_files() -> list[str]:
    """The tracked files of the checkout (what a clean clone deploys from)."""
    out = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


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
    files = _repo_files() + LOCAL_FILES
    shipped = package(files, REPO_ROOT / ".funcignore")
    leaked = sorted(path for path in shipped if path in LOCAL_FILES)
    assert leaked == []
    assert not [path for path in shipped if path.startswith(("tests/", "bench/", "infra/", "graphsim/", "devhost/"))]


def test_the_package_holds_the_app() -> None:
    """function_app.py, host.json, the app lock and all of shared/ are deployed."""
    files = _repo_files() + LOCAL_FILES
    shipped = package(files, REPO_ROOT / ".funcignore")
    assert set(MUST_SHIP) <= shipped
    shared = {path for path in _repo_files() if path.startswith("shared/")}
    assert shared and shared <= shipped
