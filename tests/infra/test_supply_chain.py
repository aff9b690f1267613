"""The dependency locks: every package of the tree pinned with hashes, in step with requirements*.in.

requirements.in / requirements-dev.in name what the code imports, pinned; `make lock` resolves them into
requirements.txt / requirements-dev.txt. These tests read the files only (no resolver, no network).
"""
from __future__ import annotations

import ast
import functools
import re
import sys
from importlib import metadata
from pathlib import Path

from bicep_checks import REPO_ROOT

# Packages that have never published a final release (Azure Monitor's exporter and tracing plugin, the
# OpenTelemetry instrumentation family): azure-monitor-opentelemetry needs them, so the lock pins their betas.
# Any other pre-release in a lock is a mistake.
ONLY_PRERELEASES = {
    "azure-core-tracing-opentelemetry",
    "azure-monitor-opentelemetry-exporter",
    "opentelemetry-instrumentation",
    "opentelemetry-semantic-conventions",
    "opentelemetry-util-http",
}
ONLY_PRERELEASE_PREFIXES = ("opentelemetry-instrumentation-",)
FIRST_PARTY = {"shared", "function_app"}

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;\\]+)")
_PRERELEASE = re.compile(r"(a|b|rc|\.dev)\d+$")


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_in(path: Path) -> dict[str, str]:
    """name -> pinned version of a requirements*.in file, following its `-r` includes."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-c "):
            continue
        if line.startswith("-r "):
            pins.update(read_in(path.parent / line[3:].strip()))
            continue
        match = _PIN.match(line)
        assert match and match.group(0) == line, f"{path.name}: {raw!r} is not pinned with == (no ranges, no URLs)"
        pins[canonical(match.group(1))] = match.group(3)
    return pins


def read_lock(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a lock; every requirement must be a `==` pin."""
    entries: dict[str, tuple[str, int]] = {}
    joined = path.read_text().replace("\\\n", " ")
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("-"), f"{path.name}: option line {line!r} (a lock carries pins only)"
        match = _PIN.match(line)
        assert match, f"{path.name}: {line[:80]!r} is not a == pin"
        entries[canonical(match.group(1))] = (match.group(3), len(re.findall(r"--hash=sha256:[0-9a-f]{64}", line)))
    return entries


def test_every_locked_package_is_pinned_with_a_hash() -> None:
    """Both locks pin every package with `==` and at least one sha256, as pip's --require-hashes needs."""
    for name in ("requirements.txt", "requirements-dev.txt"):
        lock = read_lock(REPO_ROOT / name)
        assert len(lock) > 40, f"{name} holds {len(lock)} packages: not the whole tree"
        unhashed = sorted(pkg for pkg, (_, hashes) in lock.items() if hashes == 0)
        assert unhashed == [], f"{name}: no hash for {unhashed}"


def test_each_in_requirement_is_locked_at_its_version() -> None:
    """Every pin of requirements.in / requirements-dev.in is in its lock at the same version."""
    for source, target in (("requirements.in", "requirements.txt"), ("requirements-dev.in", "requirements-dev.txt")):
        wanted = read_in(REPO_ROOT / source)
        lock = read_lock(REPO_ROOT / target)
        assert wanted, f"{source} is empty"
        wrong = {pkg: (version, lock.get(pkg, ("missing", 0))[0]) for pkg, version in wanted.items()
                 if lock.get(pkg, ("missing", 0))[0] != version}
        assert wrong == {}, f"{target} is stale against {source} (run `make lock`): {wrong}"


def test_dev_lock_installs_exactly_the_deployed_versions() -> None:
    """Tests run against the versions Azure installs: each package of requirements.txt is in the dev lock as is."""
    app = read_lock(REPO_ROOT / "requirements.txt")
    dev = read_lock(REPO_ROOT / "requirements-dev.txt")
    differ = {pkg: (version, dev.get(pkg, ("missing", 0))[0]) for pkg, (version, _) in app.items()
              if dev.get(pkg, ("missing", 0))[0] != version}
    assert differ == {}


def test_no_prerelease_but_the_packages_that_only_publish_them() -> None:
    """No `--pre` anywhere; a pre-release is locked only for a package that has never had a final release."""
    for name in ("requirements.in", "requirements-dev.in", "requirements.txt", "requirements-dev.txt", "Makefile"):
        text = (REPO_ROOT / name).read_text()
        assert not re.search(r"--pre\b|--prerelease", text), f"{name} allows pre-releases"
    for name in ("requirements.txt", "requirements-dev.txt"):
        pre = sorted(f"{pkg}=={version}" for pkg, (version, _) in read_lock(REPO_ROOT / name).items()
                     if _PRERELEASE.search(version)
                     and pkg not in ONLY_PRERELEASES and not pkg.startswith(ONLY_PRERELEASE_PREFIXES))
        assert pre == [], f"{name} locks pre-releases: {pre}"
    for name in ("requirements.in", "requirements-dev.in"):
        pre = sorted(pkg for pkg, version in read_in(REPO_ROOT / name).items() if _PRERELEASE.search(version))
        assert pre == [], f"{name} asks for pre-releases: {pre}"


def test_the_makefile_installs_with_require_hashes() -> None:
    """`make deps` installs the dev lock in hash-checking mode, and `make lock` regenerates both locks."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    installs = [line for line in makefile.splitlines() if "$(BIN)/python -m pip install" in line]
    assert installs and all("--require-hashes -r requirements-dev.txt" in line for line in installs), installs
    assert re.search(r"^lock:", makefile, re.M)
    assert "requirements.in -o requirements.txt" in makefile
    assert "requirements-dev.in -o requirements-dev.txt" in makefile


def _third_party_imports() -> set[str]:
    """Every absolute name the deployed code imports (shared/ and function_app.py), minus stdlib and itself.

    `from a.b import c` yields `a.b.c` (c may be a module, as in `from opentelemetry import trace`).
    """
    files = [REPO_ROOT / "function_app.py", *sorted((REPO_ROOT / "shared").rglob("*.py"))]
    names: set[str] = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] not in sys.stdlib_module_names | FIRST_PARTY}


@functools.cache
def _files(dist: str) -> frozenset[str]:
    """The files a distribution installed, as posix paths relative to site-packages."""
    return frozenset(file.as_posix() for file in metadata.files(dist) or ())


def _distribution_of(name: str, tops: dict[str, list[str]]) -> str:
    """The installed distribution that ships the longest module prefix of `name`. A top-level name shared by
    several distributions (namespace packages: azure.*, opentelemetry.*) is settled by their file lists."""
    candidates = tops.get(name.split(".")[0], [])
    assert candidates, f"{name} is imported but no installed distribution ships it"
    if len(candidates) == 1:
        return canonical(candidates[0])
    parts = name.split(".")
    for end in range(len(parts), 1, -1):
        stem = "/".join(parts[:end])
        for dist in candidates:
            if {f"{stem}.py", f"{stem}/__init__.py"} & _files(dist):
                return canonical(dist)
    raise AssertionError(f"{name}: none of {candidates} ships it")


def test_every_direct_import_is_pinned_in_requirements_in() -> None:
    """What the deployed code imports comes from a package pinned in requirements.in, not from a transitive one."""
    pinned = read_in(REPO_ROOT / "requirements.in")
    tops = metadata.packages_distributions()
    owners = {name: _distribution_of(name, tops) for name in sorted(_third_party_imports())}
    unpinned = {module: dist for module, dist in owners.items() if dist not in pinned}
    assert unpinned == {}, f"imported but not pinned in requirements.in: {unpinned}"
