"""pydantic's validation errors in this project's words: `{field, problem}` with the field's JSON path.

A path is written as in the documents themselves: `passkeyMethod.keyRestrictions.aaguids[2]`. Rules that look
at more than one value (duplicates, "keep or remove, not both") raise `problem(...)` with the sub-paths they
found, so one validator can name several items; union tags (`<id>`, `<object>`) never show in a path.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

#: The field named when the problem is the document (or body) itself.
ROOT_FIELD = "(document)"
#: The error type of problems raised by this project's validators.
PROBLEM = "pg_problem"


def type_name(value: object) -> str:
    """A JSON type name for a Python value (for "must be a string, got number")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def problem(text: str, *, at: Iterable[tuple[str, str]] = ()) -> PydanticCustomError:
    """An error naming `text` at the validated value, or one problem per `(sub-path, text)` in `at`."""
    items = [list(item) for item in at] or [["", text]]
    return PydanticCustomError(PROBLEM, "{text}", {"text": items[0][1], "items": items})


def join(path: str, key: str | int) -> str:
    """`path` with a key (`.key`) or an index (`[i]`) added."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    if key.startswith("["):
        return f"{path}{key}"
    return f"{path}.{key}" if path else key


def path_of(loc: Sequence[str | int]) -> str:
    """A pydantic location as a JSON path; union tags (`<...>`) and dict-key markers are left out."""
    path = ""
    for part in loc:
        if isinstance(part, str) and (part.startswith("<") or part == "[key]"):
            continue
        path = join(path, part)
    return path


def _standard(kind: str, value: Any, ctx: dict[str, Any]) -> str:
    """The problem text of one of pydantic's own error types."""
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field missing"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be an object, got {type_name(value)}"
    if kind == "bool_type":
        return f"must be true or false, got {type_name(value)}"
    if kind == "string_type":
        return f"must be a string, got {type_name(value)}"
    if kind == "int_type":
        return f"must be a whole number, got {type_name(value)}"
    if kind == "list_type":
        return f"must be an array, got {type_name(value)}"
    if kind == "too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"needs at least {least} entries"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} entries"
    if kind == "string_too_short":
        least = ctx.get("min_length", 1)
        return "must not be empty" if least == 1 else f"must be at least {least} characters"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters"
    if kind == "greater_than_equal":
        return f"must be {ctx.get('ge')} or more"
    if kind == "literal_error":
        return "must be one of: " + str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
    return "is not valid"


def problems_of(error: ValidationError) -> list[dict[str, str]]:
    """Every problem of a ValidationError as `{"field", "problem"}`, in the order pydantic found them."""
    out: list[dict[str, str]] = []
    for item in error.errors(include_url=False):
        base = path_of(item["loc"])
        ctx = item.get("ctx") or {}
        if item["type"] == PROBLEM:
            for sub, text in ctx.get("items") or [["", ctx.get("text", "is not valid")]]:
                out.append({"field": join(base, sub) if sub else (base or ROOT_FIELD), "problem": text})
            continue
        out.append({"field": base or ROOT_FIELD, "problem": _standard(item["type"], item.get("input"), ctx)})
    return out
