"""The renovation's rules, checked on the code itself: where Graph calls live, how big a module or a
function may grow, and that every module has a test file named after it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py"))]
GRAPH = ROOT / "shared" / "graph"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60

# The first segment of every Graph resource path the product uses (graph-contract.md), after the version.
# (`/$batch` is left out: Table Storage's batch endpoint has the same name.)
_GRAPH_PATH = re.compile(
    r"^/(users|groups|policies|identity|subscriptions|organization|servicePrincipals|reports|"
    r"directoryObjects|auditLogs|me)\b")


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _outside_graph() -> list[Path]:
    return [p for p in PRODUCT if GRAPH not in p.parents]


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append((node.lineno, first.value))
    return found


def test_no_graph_path_outside_the_graph_package() -> None:
    """No Graph resource path is written anywhere but shared/graph/."""
    offenders = [f"{_rel(p)}:{line}: {text[:60]!r}" for p in _outside_graph()
                 for line, text in _strings(ast.parse(p.read_text())) if _GRAPH_PATH.match(text)]
    assert offenders == []


def _is_name(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def test_no_sdk_request_builder_outside_the_graph_package() -> None:
    """No `.client.` request-builder chain, `send_raw` or `send_primitive` outside shared/graph/."""
    offenders = []
    for path in _outside_graph():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in {"send_raw", "send_primitive"}:
                offenders.append(f"{_rel(path)}:{node.lineno}: .{node.attr}")
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "client" and not _is_name(node.value.value, "http")):
                offenders.append(f"{_rel(path)}:{node.lineno}: .client.{node.attr}")
    assert offenders == []


@pytest.mark.parametrize("path", PRODUCT, ids=_rel)
def test_module_and_function_sizes(path: Path) -> None:
    """No module over 600 lines and no function over 60 lines: past that, it holds more than one idea."""
    text = path.read_text()
    assert text.count("\n") <= MAX_MODULE_LINES, f"{_rel(path)} has {text.count(chr(10))} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def _test_files_for(path: Path) -> list[Path]:
    """The test files named after a module: tests/<pkg>/test_<mod>.py, or test_<mod>_<aspect>.py beside it.

    A package's `__main__.py` (its command line) is tested as `main`: shared/__main__.py in tests/test_main.py,
    shared/schemas/__main__.py in tests/schemas/test_main.py.
    """
    parts = path.relative_to(ROOT / "shared").parts
    folder = ROOT.joinpath("tests", *parts[:-1])
    stem = Path(parts[-1]).stem
    stem = "main" if stem == "__main__" else stem
    return sorted(folder.glob(f"test_{stem}.py")) + sorted(folder.glob(f"test_{stem}_*.py"))


MODULES = [p for p in PRODUCT if p.parent != ROOT and p.name != "__init__.py"]


def test_every_module_has_a_test_file_named_after_it() -> None:
    """Tests follow the modules: shared/<pkg>/<mod>.py is tested in tests/<pkg>/test_<mod>[_<aspect>].py
    (a `__main__.py` as `main`)."""
    unnamed = sorted(_rel(p) for p in MODULES if not _test_files_for(p))
    assert unnamed == [], "modules without a test file named after them"
