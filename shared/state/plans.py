"""The `plans` table: stored policy plans (immutable), the hash of the state each was made from, and
whether it was applied. PartitionKey the tenant, RowKey the plan id."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient

from shared.errors import ConcurrencyError, InputError, NotFound
from shared.state.codec import check_entity, decode_document, encode_document
from shared.state.keys import safe_key
from shared.state.tables import PLANS, Tables, etag_of, get_entity, tenant_pk, update_if_unchanged


def plan_to_entity(tenant_id: str, plan_id: str, plan: Mapping[str, Any], state_hash: str,
                   created_at: dt.datetime) -> dict[str, Any]:
    """A plan row: the plan JSON, the state hash it was made from, and `applied` False."""
    if not isinstance(state_hash, str) or not state_hash:
        raise InputError("a plan needs a non-empty state hash")
    doc = {"id": plan_id, "plan": dict(plan), "state_hash": state_hash, "created_at": created_at, "applied": False}
    return {"PartitionKey": tenant_pk(tenant_id), "RowKey": safe_key(plan_id, what="plan id"),
            **encode_document(doc)}


def plan_from_entity(entity: TableEntity) -> dict[str, Any]:
    """`{id, plan, state_hash, created_at, applied, applied_at?, applied_run_id?, etag}`."""
    doc = decode_document(entity)
    doc["etag"] = etag_of(entity)
    return doc


class PlanTable:
    """Plans of one tenant: store once, read, mark applied under the ETag read."""

    def __init__(self, tables: Tables, tenant_id: str) -> None:
        self._tables = tables
        self.tenant_id = tenant_id

    async def put(self, plan_id: str, plan: Mapping[str, Any], state_hash: str) -> str:
        """Store a new plan (plans are immutable: an existing id raises ConcurrencyError); returns its ETag."""
        entity = plan_to_entity(self.tenant_id, plan_id, plan, state_hash, self._tables.now())
        check_entity(entity)

        async def work(client: TableClient) -> str:
            try:
                return etag_of(await client.create_entity(entity))
            except ResourceExistsError:
                raise ConcurrencyError(f"plan {plan_id!r} already exists") from None

        return await self._tables.op(PLANS, "storing a plan", work)

    async def get(self, plan_id: str) -> dict[str, Any]:
        """`{id, plan, state_hash, created_at, applied, applied_at?, applied_run_id?, etag}`; NotFound if absent."""
        pk, rk = tenant_pk(self.tenant_id), safe_key(plan_id, what="plan id")

        async def work(client: TableClient) -> dict[str, Any]:
            entity = await get_entity(client, pk, rk)
            if entity is None:
                raise NotFound(f"plan {plan_id!r} not found")
            return plan_from_entity(entity)

        return await self._tables.op(PLANS, "reading a plan", work)

    async def mark_applied(self, plan_id: str, etag: str, *, run_id: str | None = None) -> str:
        """Set `applied`/`applied_at` if the plan still has `etag` (ConcurrencyError otherwise); new ETag."""
        patch: dict[str, Any] = {"PartitionKey": tenant_pk(self.tenant_id), "RowKey": safe_key(plan_id, what="plan id"),
                                 **encode_document({"applied": True, "applied_at": self._tables.now(),
                                                    "applied_run_id": run_id})}

        async def work(client: TableClient) -> str:
            return await update_if_unchanged(client, patch, etag, UpdateMode.MERGE,
                                             NotFound(f"plan {plan_id!r} not found"))

        return await self._tables.op(PLANS, "marking a plan applied", work)
