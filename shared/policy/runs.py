"""The `runs` table from the use cases' side: `RunRecorder` writes one row per verify, plan, apply, rollback
or sweep (who, what, how long, how many Graph calls, and while a long run works its progress), and
`list_runs` is the runs listing use case (`with_details`: how far the slow lane has read a sweep's users)."""
from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from shared.actors import THE_APP, Actor, resolve_actor, run_fields
from shared.progress import Progress, eta_seconds
from shared.services import Services

log = logging.getLogger(__name__)
RUNNING = "running"


def now() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


class RunRecorder:
    """Collects what a run did and writes one row to the `runs` table."""

    def __init__(self, services: Services, kind: str, trigger: str, existing: dict[str, Any] | None = None,
                 actor: Actor = THE_APP) -> None:
        """`existing`: the queued run row of an HTTP job, finished in place under its own id (it already
        names its trigger and requester). `actor`: who acted (shared/actors.py); the app's own runs
        alone carry the app's mode."""
        self.services = services
        self.actor = actor
        self.run: dict[str, Any] = {"id": uuid.uuid4().hex, "kind": kind, "trigger": trigger, "started_at": now()}
        if existing is not None:
            self.run = {**existing, "kind": kind}
        self._t0 = time.monotonic()
        self._calls0 = services.graph.counters.requests
        self._ru0 = services.graph.budget.spent
        self._finished = False
        #: updated by the use case after each page or step; written to the run row about once a second
        self.progress = Progress(self._record_progress, spent=self.ru_spent)
        from shared.telemetry import bind_run

        bind_run(self.id)

    @property
    def id(self) -> str:
        return str(self.run["id"])

    def ru_spent(self) -> float:
        """The RU this process spent from the tenant's budget since the run began (work running beside it in
        the same process, such as the queue trigger's, counts too)."""
        return self.services.graph.budget.spent - self._ru0

    async def _record_progress(self, progress: dict[str, Any]) -> None:
        """The row of a run still working: result `running` (or the queued job's own), and who acted as far
        as known (an administrator is named from the Graph token when the run finishes)."""
        row = {**self.run, "progress": progress}
        row.setdefault("result", RUNNING)
        if "actor" not in row:
            row.update(run_fields(row["trigger"], self.actor, self.services.settings.enforcement_mode))
        await self.services.store.runs.put(row)

    async def finish(self, result: str, **fields: Any) -> dict[str, Any]:
        """Write the run's final row: its result, the fields given, its last progress, Graph calls, duration."""
        progress = self.progress.final()
        if progress is not None:
            self.run["progress"] = progress
        if "actor" not in self.run:
            self.run.update(run_fields(self.run["trigger"], await resolve_actor(self.services.graph, self.actor),
                                       self.services.settings.enforcement_mode))
        self.run.update(fields)
        self.run["result"] = result
        self.run["graphCalls"] = self.services.graph.counters.requests - self._calls0
        self.run["durationMs"] = round((time.monotonic() - self._t0) * 1000)
        self._finished = True
        await self.services.store.runs.put(self.run)
        return self.run

    async def stopped(self, exc: Exception, **fields: Any) -> None:
        """A run that ends on an error after its progress showed it working: its row says `refused` (a
        refusal, 4xx) or `failed`, with the error, rather than `running` for ever. Nothing when the run has
        finished already or never showed progress; a failure to record it is logged (the run's own error is
        what the caller sees)."""
        from shared.errors import PasskeyGuardError

        if self._finished or self.progress.view() is None:
            return
        if isinstance(exc, PasskeyGuardError):
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.detail is not None:
                error["detail"] = exc.detail
            result = "refused" if exc.status < 500 else "failed"
        else:
            error, result = {"code": "internalError", "message": "an unexpected error occurred; see the logs"}, "failed"
        try:
            await self.finish(result, error=error, **fields)
        except Exception as record_exc:
            log.warning("the stopped run %s was not recorded (%s)", self.id, type(record_exc).__name__)


def public_run(run: dict[str, Any]) -> dict[str, Any]:
    """A run row as the API and CLI show it: `runId`, and `startedAt` as ISO text."""
    out = {("runId" if k == "id" else k): v for k, v in run.items() if k != "started_at"}
    out["startedAt"] = run["started_at"].isoformat()
    return out


async def with_details(services: Services, run: dict[str, Any]) -> dict[str, Any]:
    """A sweep's run with how far the slow lane has read its changed users' passkeys: `details` {read, total,
    percent, etaSeconds (the slow lane's rate so far applied to what is left; None when done or unknown),
    firstAt, lastAt}. Other runs, and sweeps that changed nobody, come back as they are."""
    total = run.get("changedUsers")
    if run.get("kind") != "sweep" or not isinstance(total, int) or total <= 0:
        return run
    counted = await services.store.runs.details(run["runId"])
    read = min(total, counted["read"]) if counted else 0
    eta = None
    if counted and read < total:
        elapsed = (now() - counted["firstAt"]).total_seconds()
        eta = eta_seconds(read, total, elapsed)
    return {**run, "details": {"read": read, "total": total, "percent": round(100 * read / total, 1),
                               "etaSeconds": eta, "firstAt": counted["firstAt"].isoformat() if counted else None,
                               "lastAt": counted["lastAt"].isoformat() if counted else None}}


async def list_runs(services: Services, *, limit: int = 20, page_token: str | None = None) -> dict[str, Any]:
    """The runs listing use case: the tenant's runs, newest first, a page at a time (sweeps with their passkey
    details' progress)."""
    runs, token = await services.store.runs.page(limit=limit, page_token=page_token)
    return {"value": [await with_details(services, public_run(r)) for r in runs], "nextPageToken": token}
