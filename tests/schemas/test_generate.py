"""The files generated from the models are current: regenerating gives the committed bytes (`make schemas`)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.schemas.generate import OPENAPI_FILE, SCHEMA_FILE, generated_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("relative", [SCHEMA_FILE, OPENAPI_FILE])
def test_committed_file_is_what_the_models_give(relative: str) -> None:
    """Each generated file is byte for byte what `python -m shared.schemas` writes from the models."""
    assert generated_files(ROOT)[relative] == (ROOT / relative).read_text(encoding="utf-8"), (
        f"{relative} is stale: run `make schemas`")


def test_openapi_components_come_from_the_models() -> None:
    """The request bodies the routes read are the generated components, and the routes point at them."""
    spec = yaml.safe_load((ROOT / OPENAPI_FILE).read_text(encoding="utf-8"))
    schemas = spec["components"]["schemas"]
    assert schemas["ApplyBody"]["required"] == ["planId"]
    assert schemas["TicketEvent"]["additionalProperties"] is False
    body = spec["paths"]["/policy/apply"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ApplyBody"}
