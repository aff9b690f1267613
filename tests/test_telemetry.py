"""Telemetry: a run id on every log record of a run, and nothing configured without App Insights."""
from __future__ import annotations

import asyncio
import logging

from shared.config import Settings
from shared.telemetry import bind_run, configure, current_run_id

SETTINGS = Settings.from_env({"TENANT_ID": "11111111-2222-4333-8444-555555555555", "STATE_STORAGE": "x"})


def test_records_carry_the_run_id(caplog):
    """Inside a bound run every record, of any logger, has run_id; outside it is None."""
    configure(SETTINGS, env={})
    logger = logging.getLogger("shared.test_telemetry")

    async def invocation() -> None:
        bind_run("run-123")
        logger.info("inside")

    with caplog.at_level(logging.INFO):
        asyncio.run(invocation())
        logger.info("outside")
    runs = {r.getMessage(): r.run_id for r in caplog.records}
    assert runs == {"inside": "run-123", "outside": None}


def test_each_invocation_has_its_own_run():
    """bind_run in one task does not leak into another (each invocation is its own task)."""
    async def invocation(name: str) -> tuple[str, str | None]:
        bound = bind_run(name)
        await asyncio.sleep(0)
        return bound, current_run_id()

    async def both():
        return await asyncio.gather(invocation("a"), invocation("b"))

    assert asyncio.run(both()) == [("a", "a"), ("b", "b")]
    assert current_run_id() is None


def test_without_a_connection_string_nothing_is_exported():
    """Locally there is no Application Insights: configure() installs only the run-id stamping."""
    assert configure(SETTINGS, env={}) is False
    assert getattr(logging.getLogRecordFactory(), "passkey_guard", False)
