"""The `checkpoints` table: named JSON values (delta links, the subscription, the policy allow-list)
and leases, both under the tenant's PartitionKey; RowKey the name, or `lease|` + the lease name.

A lease is a row with an owner and an expiry, taken and renewed with ETags: of two racing owners exactly
one wins, and an expired lease is taken over.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient

from shared.errors import ConcurrencyError, InputError
from shared.state.codec import check_entity, decode_document, encode_document, plain_value
from shared.state.errors import is_conflict
from shared.state.keys import SEPARATOR, safe_key
from shared.state.tables import (
    CHECKPOINTS,
    Tables,
    create_or_take_over,
    entity_missing,
    etag_of,
    get_entity,
    replace_if_still,
    tenant_pk,
    update_if_unchanged,
)

#: `put_checkpoint(..., etag=ABSENT)` creates the row only if it does not exist yet.
ABSENT = "absent"
_LEASE = "lease" + SEPARATOR


def checkpoint_to_entity(tenant_id: str, name: str, value: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A checkpoint row: `value` as JSON plus `updated_at`."""
    if not isinstance(value, Mapping):
        raise InputError("a checkpoint value must be a JSON object")
    return {"PartitionKey": tenant_pk(tenant_id), "RowKey": safe_key(name, what="checkpoint name"),
            **encode_document({"value": dict(value), "updated_at": now})}


def checkpoint_from_entity(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The stored checkpoint value."""
    value = decode_document(entity).get("value")
    return dict(value) if isinstance(value, dict) else {}


def lease_to_entity(tenant_id: str, name: str, owner: str, now: dt.datetime, seconds: float) -> dict[str, Any]:
    """A lease row (in `checkpoints`): owner and expiry."""
    return {"PartitionKey": tenant_pk(tenant_id), "RowKey": _LEASE + safe_key(name, what="lease name"),
            **encode_document({"owner": owner, "acquired_at": now,
                               "expires_at": now + dt.timedelta(seconds=seconds)})}


def _lease_keys(tenant_id: str, name: str) -> tuple[str, str]:
    return tenant_pk(tenant_id), _LEASE + safe_key(name, what="lease name")


class CheckpointTable:
    """Checkpoints and leases of a tenant."""

    def __init__(self, tables: Tables, tenant_id: str) -> None:
        self._tables = tables
        self.tenant_id = tenant_id

    async def get(self, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """`(value, etag)`, or `(None, None)` when the checkpoint was never written."""
        pk, rk = tenant_pk(self.tenant_id), safe_key(name, what="checkpoint name")

        async def work(client: TableClient) -> tuple[dict[str, Any] | None, str | None]:
            entity = await get_entity(client, pk, rk)
            if entity is None:
                return None, None
            return checkpoint_from_entity(entity), etag_of(entity)

        return await self._tables.op(CHECKPOINTS, "reading a checkpoint", work)

    async def put(self, name: str, value: Mapping[str, Any], etag: str | None = None) -> str:
        """Write a checkpoint; returns the new ETag.

        `etag=None`: unconditional. `etag=ABSENT` ("absent"): only if it does not exist yet. Any other
        ETag: only if the row still has it. A lost race raises ConcurrencyError.
        """
        entity = checkpoint_to_entity(self.tenant_id, name, value, self._tables.now())
        check_entity(entity)

        async def work(client: TableClient) -> str:
            if etag is None:
                return etag_of(await client.upsert_entity(entity, mode=UpdateMode.REPLACE))
            if etag == ABSENT:
                try:
                    return etag_of(await client.create_entity(entity))
                except ResourceExistsError:
                    raise ConcurrencyError(f"checkpoint {name!r} already exists") from None
            return await update_if_unchanged(client, entity, etag, UpdateMode.REPLACE,
                                             ConcurrencyError(f"checkpoint {name!r} was deleted meanwhile"))

        return await self._tables.op(CHECKPOINTS, "writing a checkpoint", work)

    async def delete(self, name: str) -> None:
        """Remove a checkpoint (e.g. a delta link after `syncStateNotFound`); missing is fine."""
        pk, rk = tenant_pk(self.tenant_id), safe_key(name, what="checkpoint name")

        async def work(client: TableClient) -> None:
            await client.delete_entity(pk, rk)

        await self._tables.op(CHECKPOINTS, "deleting a checkpoint", work)

    async def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take (or renew, for the same `owner`) lease `name` for `seconds`; False while another holds it.

        Built on a checkpoint row and its ETag: an expired lease is taken over; of two racing owners
        exactly one wins.
        """
        if not isinstance(owner, str) or not owner:
            raise InputError("lease owner must be a non-empty string")
        if seconds <= 0:
            raise InputError("lease duration must be positive")
        now = self._tables.now()
        entity = lease_to_entity(self.tenant_id, name, owner, now, seconds)

        def free(current: TableEntity) -> dict[str, Any] | None:
            expires = plain_value(current.get("expires_at"))
            held = current.get("owner") != owner and isinstance(expires, dt.datetime) and expires > now
            return None if held else entity

        async def work(client: TableClient) -> bool:
            return await create_or_take_over(client, entity, free) is True

        return await self._tables.op(CHECKPOINTS, "acquiring a lease", work)

    async def release_lease(self, name: str, owner: str) -> bool:
        """Give up a lease `owner` holds; False when it is not (or no longer) theirs."""
        pk, rk = _lease_keys(self.tenant_id, name)

        async def work(client: TableClient) -> bool:
            current = await get_entity(client, pk, rk)
            if current is None or current.get("owner") != owner:
                return False
            try:
                await client.delete_entity(pk, rk, etag=etag_of(current), match_condition=MatchConditions.IfNotModified)
                return True
            except HttpResponseError as exc:
                if is_conflict(exc) or entity_missing(exc):
                    return False
                raise

        return await self._tables.op(CHECKPOINTS, "releasing a lease", work)

    async def renew_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Extend a lease `owner` still holds by `seconds` from now; False when the row is gone or another
        owner has it (unlike `acquire_lease`, a lost lease is never taken back: the caller must stop)."""
        if seconds <= 0:
            raise InputError("lease duration must be positive")
        pk, rk = _lease_keys(self.tenant_id, name)
        entity = lease_to_entity(self.tenant_id, name, owner, self._tables.now(), seconds)

        async def work(client: TableClient) -> bool:
            current = await get_entity(client, pk, rk)
            if current is None or current.get("owner") != owner:
                return False
            return await replace_if_still(client, entity, current)

        return await self._tables.op(CHECKPOINTS, "renewing a lease", work)
