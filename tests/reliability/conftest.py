"""Fixtures of the reliability tests: the indexed queue functions, driven like the host drives them."""
from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def processor(functions: dict[str, Any]) -> Any:
    """The `upn_processor` queue function as the worker would call it."""
    return functions["upn_processor"].get_user_function()


@pytest.fixture(scope="session")
def slow_lane(functions: dict[str, Any]) -> Any:
    """The `passkey_reads` queue function (the slow lane the processor feeds) as the worker would call it."""
    return functions["passkey_reads"].get_user_function()
