"""The files generated from the models: the desired-state JSON Schema and the OpenAPI components.

The OpenAPI description stays hand-written (paths, responses, prose) except the request-body schemas, which
come from the models between two marker lines in `components.schemas`. OpenAPI 3.0 speaks an older JSON
Schema than pydantic writes, so the components are translated: `$defs` references point at
`#/components/schemas/...` and `const` becomes a one-value `enum`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from shared.schemas.bodies import OPENAPI_BODIES
from shared.schemas.document import document_json_schema, without_titles

SCHEMA_FILE = "shared/policy/desired-state.schema.json"
OPENAPI_FILE = "openapi/passkey-guard.yaml"
BEGIN = "    # --- generated from shared/schemas (make schemas): do not edit by hand ---"
END = "    # --- end of generated schemas ---"


def schema_text() -> str:
    """desired-state.schema.json as written: two-space indent, non-ASCII kept, a final newline."""
    return json.dumps(document_json_schema(), indent=2, ensure_ascii=False) + "\n"


def _openapi_30(node: Any) -> Any:
    """A pydantic JSON Schema fragment in OpenAPI 3.0's dialect."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                out[key] = value.replace("#/$defs/", "#/components/schemas/")
            elif key == "const":
                out["enum"] = [value]
            else:
                out[key] = _openapi_30(value)
        return out
    if isinstance(node, list):
        return [_openapi_30(v) for v in node]
    return node


def openapi_components(models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    """`components.schemas` entries for `models` (by their name in the description), nested models beside them."""
    out: dict[str, Any] = {}
    for name, model in models.items():
        schema = without_titles(model.model_json_schema(by_alias=True,
                                                        ref_template="#/components/schemas/{model}"))
        for nested, definition in schema.pop("$defs", {}).items():
            out[nested] = _openapi_30(definition)
        out[name] = _openapi_30(schema)
    return out


def _yaml_block(components: dict[str, Any]) -> list[str]:
    """Each component as one line of flow YAML (JSON is YAML), four spaces in."""
    return [f"    {name}: {json.dumps(schema, ensure_ascii=False, sort_keys=False)}"
            for name, schema in components.items()]


def openapi_text(current: str) -> str:
    """The OpenAPI description with the generated block between the markers replaced."""
    lines = current.splitlines()
    try:
        begin, end = lines.index(BEGIN), lines.index(END)
    except ValueError:
        raise SystemExit(f"{OPENAPI_FILE}: the generated-schemas markers are missing") from None
    block = _yaml_block(openapi_components(OPENAPI_BODIES))
    return "\n".join([*lines[:begin + 1], *block, *lines[end:]]) + "\n"


def generated_files(root: Path) -> dict[str, str]:
    """Relative path -> the text the models give for it."""
    return {SCHEMA_FILE: schema_text(),
            OPENAPI_FILE: openapi_text((root / OPENAPI_FILE).read_text(encoding="utf-8"))}
