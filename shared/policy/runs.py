"""The `runs` table from the use cases' side: `RunRecorder` writes one row per verify, plan, apply or
rollback (who, what, how long, how many Graph calls), and `list_runs` is the runs listing use case."""
from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from shared.actors import THE_APP, Actor, resolve_actor, run_fields
from shared.services import Services


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
        from shared.telemetry import bind_run

        bind_run(self.id)

    @property
    def id(self) -> str:
        return str(self.run["id"])

    async def finish(self, result: str, **fields: Any) -> dict[str, Any]:
        if "actor" not in self.run:
            self.run.update(run_fields(self.run["trigger"], await resolve_actor(self.services.graph, self.actor),
                                       self.services.settings.enforcement_mode))
        self.run.update(fields)
        self.run["result"] = result
        self.run["graphCalls"] = self.services.graph.counters.requests - self._calls0
        self.run["durationMs"] = round((time.monotonic() - self._t0) * 1000)
        await self.services.store.runs.put(self.run)
        return self.run


def public_run(run: dict[str, Any]) -> dict[str, Any]:
    """A run row as the API and CLI show it: `runId`, and `startedAt` as ISO text."""
    out = {("runId" if k == "id" else k): v for k, v in run.items() if k != "started_at"}
    out["startedAt"] = run["started_at"].isoformat()
    return out


async def list_runs(services: Services, *, limit: int = 20, page_token: str | None = None) -> dict[str, Any]:
    """The runs listing use case: the tenant's runs, newest first, a page at a time."""
    runs, token = await services.store.runs.page(limit=limit, page_token=page_token)
    return {"value": [public_run(r) for r in runs], "nextPageToken": token}
