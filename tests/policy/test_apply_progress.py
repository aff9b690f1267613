"""An apply people can follow: its run record, read back from Azurite at each step, goes through reading the
tenant, the lockout evaluation (users read a slice at a time, with a total and an ETA), the writes (n of m)
and the read-back, and the finished record keeps where it ended beside its result."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import shared.policy.planning as planning_module
import shared.progress as progress_module
from shared.policy.apply import apply_document
from tests.e2e.stack import YUBI, user
from tests.e2e.test_policy_e2e import doc_with, legacy_tenant

SLICE = 3


def follow_the_run(services: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Before each update a second passes on the progress's clock (so each update is written); after it the
    newest run record is read back from Azurite. Returns the progress of each record read."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=lambda: clock.now))
    seen: list[dict[str, Any]] = []

    def spy(real: Any) -> Any:
        async def update(self: progress_module.Progress, *args: Any, **kwargs: Any) -> None:
            clock.now += 1.0
            await real(self, *args, **kwargs)
            [newest], _ = await services.store.runs.page(limit=1)
            assert newest["result"] == "running"
            seen.append(newest["progress"])
        return update

    monkeypatch.setattr(progress_module.Progress, "begin", spy(progress_module.Progress.begin))
    monkeypatch.setattr(progress_module.Progress, "advance", spy(progress_module.Progress.advance))
    return seen


async def test_an_apply_shows_each_step_and_the_lockout_evaluation_user_by_slice(use_case_stack, monkeypatch):
    """Removing an AAGUID people use: the lockout evaluation counts 3, 6, 8 of 8 users with an ETA from its
    rate, the writes count up to all of them, the read-back follows, and the applied run keeps its progress."""
    doc = legacy_tenant()
    doc["users"] += [user(n, key=YUBI) for n in range(5, 9)]
    services, sim = await use_case_stack(doc)
    monkeypatch.setattr(planning_module, "LOCKOUT_SLICE", SLICE)
    seen = follow_the_run(services, monkeypatch)
    result = await apply_document(services, trigger="test", accept_lockout=True,
                                  document=doc_with(passkeyMethod__keyRestrictions__remove=[YUBI]))
    assert result["result"] == "applied"
    phases = [p["phase"] for p in seen]
    assert list(dict.fromkeys(phases)) == ["reading the tenant", "lockout evaluation", "writes", "read-back"]
    lockout = [p for p in seen if p["phase"] == "lockout evaluation"]
    assert [p["done"] for p in lockout] == [0, 3, 6, 8] and {p["total"] for p in lockout} == {8}
    assert [p["etaSeconds"] for p in lockout] == [None, 2, 1, 0]  # a second a slice: what is left at that rate
    writes = [p for p in seen if p["phase"] == "writes"]
    total = len(result["writes"])
    assert [p["done"] for p in writes] == list(range(total + 1)) and {p["total"] for p in writes} == {total}
    assert sim.stats()["writes"] == total
    run = await services.store.runs.get(result["runId"])
    assert run["result"] == "applied" and run["progress"]["phase"] == "read-back"
    assert run["progress"]["etaSeconds"] is None
