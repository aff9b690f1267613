"""Fixtures of the reliability tests: the indexed queue function, driven like the host drives it."""
from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def processor(functions: dict[str, Any]) -> Any:
    """The `upn_processor` queue function as the worker would call it."""
    return functions["upn_processor"].get_user_function()
