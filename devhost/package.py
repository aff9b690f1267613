"""The deployment package: the repo's tracked files minus what `.funcignore` keeps out, as a zip.

    python -m devhost.package app.zip

For `az functionapp deployment source config-zip --build-remote true` (azd deploy reads .funcignore itself).
Only tracked files are candidates, so nothing local (.env, *.pem, .reliability/) can slip in, and .funcignore
keeps them out besides. The rules are gitignore's, as the packagers apply them: `dir/` matches a directory at
any depth, a pattern with an inner `/` is anchored at the root, any other matches a name at any depth, `!`
takes a path back, and everything under an excluded directory is excluded.
"""
from __future__ import annotations

import fnmatch
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def patterns(funcignore: Path) -> list[str]:
    """The patterns of a .funcignore, without comments and blank lines."""
    lines = (line.strip() for line in funcignore.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _matches(pattern: str, parts: list[str], is_dir: bool) -> bool:
    """Whether one gitignore pattern matches the path `parts` (a directory when is_dir)."""
    if pattern.endswith("/") and not is_dir:
        return False
    body = pattern.strip("/")
    if "/" in pattern.rstrip("/"):  # anchored at the root
        return len(parts) == body.count("/") + 1 and fnmatch.fnmatchcase("/".join(parts), body)
    return fnmatch.fnmatchcase(parts[-1], body)


def excluded(path: str, rules: list[str]) -> bool:
    """Whether `rules` keep `path` (a file, repo-relative, posix) out: it or one of its directories matches."""
    parts = path.split("/")
    for end in range(1, len(parts) + 1):
        verdict = False
        for rule in rules:
            if _matches(rule.removeprefix("!"), parts[:end], end < len(parts)):
                verdict = not rule.startswith("!")
        if verdict:
            return True
    return False


def package_files(files: list[str], funcignore: Path) -> list[str]:
    """The files of `files` a packager honouring `funcignore` deploys, in order."""
    rules = patterns(funcignore)
    return [path for path in files if not excluded(path, rules)]


def tracked_files(root: Path = ROOT) -> list[str]:
    """The checkout's tracked files (what a clean clone holds)."""
    out = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m devhost.package OUT.zip", file=sys.stderr)
        return 2
    files = package_files(tracked_files(), ROOT / ".funcignore")
    with zipfile.ZipFile(argv[0], "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(ROOT / path, path)
    print(f"{argv[0]}: {len(files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
