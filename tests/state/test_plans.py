"""The plans table against Azurite: plans stored once, marked applied under the ETag read."""
from __future__ import annotations

import pytest

from shared.errors import ConcurrencyError, NotFound
from shared.state import StateStore


async def test_plans_store_read_and_mark_applied_with_etag(store: StateStore, tenant: str) -> None:
    """A plan round-trips; marking it applied needs the current ETag; a stale one gets ConcurrencyError."""
    plan = {"changes": [{"op": "set", "path": "/state", "value": "enabled"}]}
    await store.plans.put("p1", plan, "sha256:abc")
    got = await store.plans.get("p1")
    assert (got["plan"], got["state_hash"], got["applied"]) == (plan, "sha256:abc", False)
    new_etag = await store.plans.mark_applied("p1", got["etag"], run_id="run-9")
    applied = await store.plans.get("p1")
    assert applied["applied"] is True and applied["applied_run_id"] == "run-9" and applied["etag"] == new_etag
    with pytest.raises(ConcurrencyError):
        await store.plans.mark_applied("p1", got["etag"])


async def test_plan_ids_are_unique_and_missing_plans_not_found(store: StateStore, tenant: str) -> None:
    """Storing the same plan id twice is a ConcurrencyError; unknown plans raise NotFound."""
    await store.plans.put("p/1", {"a": 1}, "h")
    with pytest.raises(ConcurrencyError):
        await store.plans.put("p/1", {"a": 2}, "h")
    assert (await store.plans.get("p/1"))["plan"] == {"a": 1}
    with pytest.raises(NotFound):
        await store.plans.get("missing")
    with pytest.raises(NotFound):
        await store.plans.mark_applied("missing", "W/\"datetime'2025-01-01T00%3A00%3A00Z'\"")
