"""Telemetry: OpenTelemetry to Application Insights, and one run id that ties a run's logs together.

`configure(settings)` runs once per process, on the first invocation (never at import: the monitor
distro costs about a second of cold start). It signs in to Application Insights with the app's managed
identity (local auth is off in Azure) and exports the logs of the `shared` logger tree (function_app
logs as `shared.function_app`), traces and metrics. Without `APPLICATIONINSIGHTS_CONNECTION_STRING`
(local, tests) it only stamps run ids.

`bind_run(run_id)` makes a run id current for the rest of the invocation (a context variable) and puts
it on the current span; a log-record factory stamps it on every record as `run_id` (a custom dimension
in Application Insights). Queue messages carry the run id of the sweep or webhook that produced them,
so the processor's logs join the same run.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os

from shared.config import APPLICATIONINSIGHTS_CONNECTION_STRING, Settings

log = logging.getLogger(__name__)
_run_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("passkey_guard_run_id", default=None)
_configured: bool | None = None  # None: not yet; then whether logs go to Application Insights


def _install_record_factory() -> None:
    """Every log record, from any logger, gets `run_id` (None outside a run)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "passkey_guard", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)  # type: ignore[arg-type]
        record.run_id = _run_id.get()
        return record

    factory.passkey_guard = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def current_run_id() -> str | None:
    return _run_id.get()


def bind_run(run_id: str | None = None) -> str:
    """Make `run_id` (a new one when None) the current run for the rest of this invocation.

    Each Functions invocation runs in its own task, so its context is its own and nothing leaks. The
    current span gets the run id as an attribute too.
    """
    import uuid

    run_id = run_id or uuid.uuid4().hex
    _run_id.set(run_id)
    with contextlib.suppress(Exception):  # OpenTelemetry is optional locally
        from opentelemetry import trace

        trace.get_current_span().set_attribute("passkeyguard.run_id", run_id)
    return run_id


def configure(settings: Settings, env: dict[str, str] | None = None) -> bool:
    """Install the run-id filter and, in Azure, the Azure Monitor OpenTelemetry distro. Idempotent."""
    global _configured
    if _configured is not None:
        return _configured
    _install_record_factory()
    for noisy in ("azure", "azure.core.pipeline.policies.http_logging_policy", "httpx", "kiota_http"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    connection = (env if env is not None else os.environ).get(APPLICATIONINSIGHTS_CONNECTION_STRING)
    if connection:
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
        from azure.monitor.opentelemetry import configure_azure_monitor

        credential = (ManagedIdentityCredential(client_id=settings.azure_client_id) if settings.azure_client_id
                      else DefaultAzureCredential())
        configure_azure_monitor(connection_string=connection, credential=credential, logger_name="shared")
        log.info("telemetry goes to Application Insights with Entra ID authentication")
    _configured = bool(connection)
    return _configured
