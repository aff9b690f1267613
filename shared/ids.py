"""Identifier shapes the app checks: the GUID (Entra object ids, tenant ids, AAGUIDs), written once.

`GUID_PATTERN` is the anchored regular expression (for JSON Schema `pattern`), `GUID` the compiled form
without anchors (use `fullmatch` or `findall`), `is_guid` the check every module uses.
"""
from __future__ import annotations

import re

_GUID_BODY = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
#: A GUID in its 8-4-4-4-12 hex form, any case, anchored (JSON Schema `pattern`).
GUID_PATTERN = rf"^{_GUID_BODY}$"
#: The same, compiled and unanchored: `GUID.fullmatch(text)`, `GUID.findall(text)`.
GUID = re.compile(_GUID_BODY)


def is_guid(value: object) -> bool:
    """True when `value` is a string in the 8-4-4-4-12 hex form (any case, nothing around it)."""
    return isinstance(value, str) and GUID.fullmatch(value) is not None
