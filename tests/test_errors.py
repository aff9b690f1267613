"""The exception tree drawn in shared/errors.py's docstring is the tree of classes the code defines: every
class of the family appears once under its real parent, the connectors are well formed, each `*` marks a class
defined outside shared/errors.py, and each HTTP status written in brackets is the one the class answers with."""
from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass

import pytest

import shared
from shared import errors
from shared.errors import PasskeyGuardError

_NODE = re.compile(r"(?P<prefix>(?:[│ ] {3})*)(?P<branch>[├└]── )(?P<name>\w+)(?P<star> \*)?(?:\s+(?P<text>.*))?$")
_STATUS = re.compile(r"\((\d{3})\b")


@dataclass
class Drawn:
    name: str
    parent: str | None
    depth: int
    star: bool
    text: str
    line: str  # as drawn, without the drawing's indentation
    continuation: list[str]


def drawing(doc: str) -> list[str]:
    """The lines of the drawing: from the root's line to the first blank line."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("PasskeyGuardError "))
    block = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line)
    return block


def parse(doc: str) -> list[Drawn]:
    """The drawn nodes in order, each with its parent (from the indentation of its connector)."""
    block = drawing(doc)
    indent = len(block[0]) - len(block[0].lstrip())
    root = block[0].split(maxsplit=1)
    nodes = [Drawn(root[0], None, 0, False, root[1] if len(root) > 1 else "", block[0][indent:], [])]
    stack = [root[0]]
    for line in block[1:]:
        body = line[indent:]
        match = _NODE.match(body)
        if match is None:  # a description carried over to the next line
            nodes[-1].continuation.append(body)
            continue
        depth = len(match["prefix"]) // 4 + 1
        assert depth <= len(stack), f"{match['name']} is drawn deeper than the line above allows: {line!r}"
        del stack[depth:]
        nodes.append(Drawn(match["name"], stack[-1], depth, bool(match["star"]), match["text"] or "", body, []))
        stack.append(match["name"])
    return nodes


def connector_problems(doc: str) -> list[str]:
    """Each node's line has `├──` when a sibling follows it and `└──` when it is the last child, and the
    vertical bars to its left stand exactly where an ancestor still has a sibling to come."""
    nodes = parse(doc)
    problems = []

    def more_siblings(i: int) -> bool:
        for later in nodes[i + 1:]:
            if later.depth < nodes[i].depth:
                return False
            if later.depth == nodes[i].depth:
                return True
        return False

    for i, node in enumerate(nodes[1:], start=1):
        ancestors = []  # for each depth 1..depth-1: does the ancestor at that depth have a later sibling?
        for depth in range(1, node.depth):
            j = max(k for k in range(i) if nodes[k].depth == depth)
            ancestors.append(more_siblings(j))
        prefix = "".join("│   " if bar else "    " for bar in ancestors)
        expected = prefix + ("├── " if more_siblings(i) else "└── ") + node.name
        if not node.line.startswith(expected):
            problems.append(f"{node.name}: expected the line to start {expected!r}, got {node.line[:len(expected)]!r}")
        bars = prefix + ("│   " if more_siblings(i) else "    ") + ("│" if any(
            n.parent == node.name for n in nodes) else " ")
        for carried in node.continuation:
            if carried[:len(bars)].rstrip() != bars.rstrip():
                problems.append(f"{node.name}: a carried-over line should start {bars.rstrip()!r}: {carried!r}")
    return problems


def family() -> dict[str, type[PasskeyGuardError]]:
    """Every PasskeyGuardError class in the shared package (each module imported, so none is missed)."""
    for module in pkgutil.walk_packages(shared.__path__, "shared."):
        if module.name != "shared.__main__":
            importlib.import_module(module.name)
    found: dict[str, type[PasskeyGuardError]] = {}
    todo: list[type[PasskeyGuardError]] = [PasskeyGuardError]
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("shared."):
            assert cls.__name__ not in found, f"two classes named {cls.__name__}"
            found[cls.__name__] = cls
        todo += cls.__subclasses__()
    return found


def test_the_drawing_is_the_class_tree():
    """Every class of the family is drawn exactly once, under the parent it really inherits from."""
    classes = family()
    nodes = parse(errors.__doc__ or "")
    drawn = [n.name for n in nodes]
    assert len(drawn) == len(set(drawn)), "a class is drawn twice"
    assert set(drawn) == set(classes), (sorted(set(classes) - set(drawn)), sorted(set(drawn) - set(classes)))
    for node in nodes[1:]:
        assert classes[node.name].__bases__[0].__name__ == node.parent, node.name


def test_the_connectors_are_well_formed():
    """├── before a sibling, └── on the last child, │ where an ancestor's siblings continue."""
    assert connector_problems(errors.__doc__ or "") == []


def test_stars_mark_the_classes_defined_elsewhere():
    """A `*` is drawn exactly beside the classes that live outside shared/errors.py."""
    classes = family()
    for node in parse(errors.__doc__ or "")[1:]:
        assert node.star is (classes[node.name].__module__ != "shared.errors"), node.name


def test_a_status_in_brackets_is_the_class_status():
    """A description that names an HTTP status names the one the class answers with."""
    classes = family()
    for node in parse(errors.__doc__ or ""):
        for status in _STATUS.findall(" ".join([node.text, *node.continuation])):
            assert int(status) == classes[node.name].status, node.name


BROKEN = """Tree.

    PasskeyGuardError                  base
    ├── ConfigError                    settings
    │   └── SecretUnavailable          secrets
    │                                  carried over
    │   └── WrongTenant                tenants
    └── InputError                     input
"""


def test_a_misdrawn_connector_is_reported():
    """Two `└──` under one parent (as the drawing once had) and a carried-over line without its bar are reported."""
    problems = connector_problems(BROKEN)
    assert any(p.startswith("SecretUnavailable: expected") for p in problems), problems
    assert any("SecretUnavailable: a carried-over line" in p for p in problems), problems
    assert [n.parent for n in parse(BROKEN)] == [None, "PasskeyGuardError", "ConfigError", "ConfigError",
                                                 "PasskeyGuardError"]


@pytest.mark.parametrize(("line", "parent"), [("    │   └── WrongTenant   x", "ConfigError"),
                                              ("    └── WrongTenant   x", "PasskeyGuardError")])
def test_the_parent_comes_from_the_indentation(line, parent):
    """A node drawn one level in hangs under the node above it; at the first level, under the root."""
    doc = "    PasskeyGuardError   base\n    ├── ConfigError   settings\n" + line + "\n"
    assert parse(doc)[-1].parent == parent
