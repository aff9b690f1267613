"""OData query options as Graph reads them: `$select`, `$top`, `$filter` (a useful subset).

The filter grammar covers what Passkey Guard and its tests send: `eq`, `ne`, `in (...)`, `and`, `or`,
`not`, parentheses, `startswith(p,'x')`, `endswith(p,'x')` and lambda `p/any(x:x eq|has 'v')`.
String comparisons ignore case, as the directory does for names and UPNs. Filters compile to a
predicate over a plain dict; `candidate_ids` pulls out `id eq`/`id in` lookups so the caller can use
its index instead of scanning every object.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from graphsim.errors import GraphApiError

Predicate = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^']|'')*')
  | (?P<num>-?\d+(?:\.\d+)?(?![\w-]))
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})
  | (?P<punct>[(),:/])
  | (?P<word>[A-Za-z_@$][\w.@$]*)
)""", re.VERBOSE)


def unsupported(message: str) -> GraphApiError:
    """Graph's 400 for a query it does not support."""
    return GraphApiError(400, "Request_UnsupportedQuery", message)


@dataclass(frozen=True)
class Node:
    """One node of a parsed filter: `op` plus operands (property path, literal values or sub-nodes)."""

    op: str
    args: tuple[Any, ...]


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise unsupported(f"Invalid filter clause: syntax error at position {pos} in '{text}'.")
        pos = m.end()
        kind = m.lastgroup or ""
        val = m.group(kind)
        if kind == "str":
            tokens.append(("lit", val[1:-1].replace("''", "'")))
        elif kind == "num":
            tokens.append(("lit", float(val) if "." in val else int(val)))
        elif kind == "guid":
            tokens.append(("lit", val))
        elif kind == "punct":
            tokens.append(("p", val))
        else:
            low = val.lower()
            if low in ("true", "false"):
                tokens.append(("lit", low == "true"))
            elif low == "null":
                tokens.append(("lit", None))
            else:
                tokens.append(("w", val))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    def error(self, what: str) -> GraphApiError:
        return unsupported(f"Invalid filter clause: {what} in '{self.text}'.")

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, Any]:
        tok = self.peek()
        if tok is None:
            raise self.error("unexpected end")
        self.i += 1
        return tok

    def expect(self, kind: str, value: Any = None) -> Any:
        tok = self.take()
        if tok[0] != kind or (value is not None and str(tok[1]).lower() != value):
            raise self.error(f"expected {value or kind}, found {tok[1]!r}")
        return tok[1]

    def is_word(self, word: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "w" and tok[1].lower() == word

    def parse(self) -> Node:
        node = self.parse_or()
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def parse_or(self) -> Node:
        node = self.parse_and()
        while self.is_word("or"):
            self.take()
            node = Node("or", (node, self.parse_and()))
        return node

    def parse_and(self) -> Node:
        node = self.parse_unary()
        while self.is_word("and"):
            self.take()
            node = Node("and", (node, self.parse_unary()))
        return node

    def parse_unary(self) -> Node:
        if self.is_word("not"):
            self.take()
            return Node("not", (self.parse_unary(),))
        tok = self.peek()
        if tok == ("p", "("):
            self.take()
            node = self.parse_or()
            self.expect("p", ")")
            return node
        if tok is not None and tok[0] == "w" and tok[1].lower() in ("startswith", "endswith"):
            func = self.take()[1].lower()
            self.expect("p", "(")
            path = self.parse_path()
            self.expect("p", ",")
            lit = self.expect("lit")
            self.expect("p", ")")
            if not isinstance(lit, str):
                raise self.error(f"{func} needs a string")
            return Node(func, (path, lit))
        return self.parse_comparison()

    def parse_path(self) -> str:
        parts = [self.expect("w")]
        while self.peek() == ("p", "/") and self.i + 1 < len(self.toks) and self.toks[self.i + 1][0] == "w" \
                and self.toks[self.i + 1][1].lower() not in ("any", "all"):
            self.take()
            parts.append(self.expect("w"))
        return "/".join(parts)

    def parse_comparison(self) -> Node:
        path = self.parse_path()
        if self.peek() == ("p", "/"):
            self.take()
            lam = self.expect("w").lower()
            if lam != "any":
                raise self.error(f"lambda '{lam}' not supported")
            self.expect("p", "(")
            var = self.expect("w")
            self.expect("p", ":")
            if self.expect("w") != var:
                raise self.error("lambda variable mismatch")
            op = self.expect("w").lower()
            if op not in ("eq", "has"):
                raise self.error(f"operator '{op}' not supported inside any()")
            lit = self.expect("lit")
            self.expect("p", ")")
            return Node("any_" + op, (path, lit))
        op = self.expect("w").lower()
        if op == "in":
            self.expect("p", "(")
            values = [self.expect("lit")]
            while self.peek() == ("p", ","):
                self.take()
                values.append(self.expect("lit"))
            self.expect("p", ")")
            return Node("in", (path, tuple(values)))
        if op not in ("eq", "ne", "ge", "le", "gt", "lt", "has"):
            raise self.error(f"operator '{op}' not supported")
        return Node(op, (path, self.expect("lit")))


def parse_filter(text: str) -> Node:
    """Parse a `$filter` expression; raises a 400 `Request_UnsupportedQuery` when it can't."""
    return _Parser(text).parse()


def _norm(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _flags(value: Any) -> set[str]:
    return {part.strip().lower() for part in str(value).split(",") if part.strip()}


def compile_filter(node: Node, resolve: Callable[[str], str]) -> Predicate:
    """Turn a parsed filter into a predicate; `resolve` maps a property path to its stored name."""
    op, args = node.op, node.args
    if op in ("and", "or"):
        left, right = compile_filter(args[0], resolve), compile_filter(args[1], resolve)
        if op == "and":
            return lambda obj: left(obj) and right(obj)
        return lambda obj: left(obj) or right(obj)
    if op == "not":
        inner = compile_filter(args[0], resolve)
        return lambda obj: not inner(obj)
    path = [resolve(p) for p in args[0].split("/")]

    def get(obj: dict[str, Any]) -> Any:
        value: Any = obj
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    lit = args[1]
    if op == "startswith":
        low = lit.lower()
        return lambda obj: isinstance(v := get(obj), str) and v.lower().startswith(low)
    if op == "endswith":
        low = lit.lower()
        return lambda obj: isinstance(v := get(obj), str) and v.lower().endswith(low)
    if op == "in":
        wanted = {_norm(v) for v in lit}
        return lambda obj: _norm(get(obj)) in wanted
    if op == "any_eq":
        want = _norm(lit)
        return lambda obj: any(_norm(v) == want for v in (get(obj) or []))
    if op == "any_has":
        flag = str(lit).lower()
        return lambda obj: any(flag in _flags(v) for v in (get(obj) or []))
    if op == "has":
        flag = str(lit).lower()
        return lambda obj: flag in _flags(get(obj) or "")
    want = _norm(lit)
    if op == "eq":
        return lambda obj: _norm(get(obj)) == want
    if op == "ne":
        return lambda obj: _norm(get(obj)) != want
    compare = {"ge": lambda a, b: a >= b, "le": lambda a, b: a <= b,
               "gt": lambda a, b: a > b, "lt": lambda a, b: a < b}[op]

    def ordered(obj: dict[str, Any]) -> bool:
        value = _norm(get(obj))
        try:
            return value is not None and bool(compare(value, want))
        except TypeError:
            return False
    return ordered


def candidate_ids(node: Node) -> set[str] | None:
    """Ids the filter can only match (from `id eq` / `id in` / `or` of those), or None when any may match."""
    if node.op == "eq" and node.args[0].lower() == "id" and isinstance(node.args[1], str):
        return {node.args[1].lower()}
    if node.op == "in" and node.args[0].lower() == "id":
        return {str(v).lower() for v in node.args[1]}
    if node.op == "or":
        left, right = candidate_ids(node.args[0]), candidate_ids(node.args[1])
        return None if left is None or right is None else left | right
    if node.op == "and":
        left, right = candidate_ids(node.args[0]), candidate_ids(node.args[1])
        if left is None:
            return right
        return left if right is None else left & right
    return None


def uses_advanced(node: Node) -> bool:
    """True when the filter needs Graph's advanced query mode (`endswith`, `ne`, `not` on directory objects)."""
    if node.op in ("endswith", "ne", "not"):
        return True
    return any(isinstance(a, Node) and uses_advanced(a) for a in node.args)


def parse_select(raw: str | None, known: Iterable[str], type_name: str) -> list[str] | None:
    """`$select` as canonical property names (case-insensitive), `id` always first; None when absent.

    Unknown names are a 400 the way Graph reports them.
    """
    if raw is None:
        return None
    by_lower = {k.lower(): k for k in known}
    out = ["id"]
    for part in raw.split(","):
        name = part.strip()
        if not name:
            continue
        canon = by_lower.get(name.lower())
        if canon is None:
            raise GraphApiError(400, "BadRequest",
                                f"Could not find a property named '{name}' on type '{type_name}'.")
        if canon not in out:
            out.append(canon)
    return out


def parse_top(raw: str | None, maximum: int) -> int | None:
    """`$top` as an int in 1..maximum, else Graph's 400."""
    if raw is None:
        return None
    try:
        top = int(raw)
    except ValueError:
        raise unsupported(f"Invalid page size specified: '{raw}'.") from None
    if not 1 <= top <= maximum:
        raise unsupported(f"Invalid page size specified: '{raw}'. Must be between 1 and {maximum} inclusive.")
    return top
