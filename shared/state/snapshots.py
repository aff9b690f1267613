"""The `snapshots` table: the last seen UPN of every user, many users a row.

PartitionKey `tenant|bNN` (the user's flag bucket), RowKey `gNNN` (64 groups a bucket): one property per
user (`u` + GUID hex, see `snapshot_property`) holding `"<upn> <seen at>"` (`snapshot_value`). Reads are
one point read per row, writes are MERGEs of the changed users' properties only (no read, no ETag: two
writers of the same row touch different properties, or the same one with the same meaning), and the
whole table is ~1,000 rows for 100k users, read in one query per partition.
"""
from __future__ import annotations

import datetime as dt
import re
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from azure.data.tables.aio import TableClient

from shared.errors import InputError, StateError
from shared.ids import is_guid
from shared.state import fastpath
from shared.state.codec import MAX_CUSTOM_PROPERTIES, check_entity, chunk_operations
from shared.state.keys import bucket_partition
from shared.state.tables import MAX_PAGE, MERGE, SNAPSHOT_GROUPS, SNAPSHOTS, Layout, Tables, replace_if_still

MAX_PROPERTY_NAME = 255
_MAX_SELECT = 40  # more properties than this: read the whole row (the URL stays short)
_SEEN_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def snapshot_property(user_id: str) -> str:
    """The property that holds `user_id`'s UPN in its grouped snapshot row (reversible: `snapshot_user`).

    A lowercase GUID (Graph's ids) is `u` + its 32 hex digits; anything else is `x` + the hex of its
    UTF-8 bytes (a valid property name whatever the id holds; at most 255 characters, so 127 bytes)."""
    if not isinstance(user_id, str) or not user_id:
        raise InputError("user id must be a non-empty string")
    if is_guid(user_id) and user_id == user_id.lower():
        return "u" + user_id.replace("-", "")
    try:
        raw = user_id.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("user id is not valid Unicode text") from None
    if 1 + 2 * len(raw) > MAX_PROPERTY_NAME:
        raise InputError(f"user id is too long for a snapshot ({len(raw)} bytes; at most "
                         f"{(MAX_PROPERTY_NAME - 1) // 2})")
    return "x" + raw.hex()


def snapshot_user(name: str) -> str | None:
    """The user id of a snapshot property name, or None for anything else (keys, metadata)."""
    if len(name) == 33 and name[0] == "u":
        h = name[1:]
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    if name[:1] == "x" and len(name) > 1:
        try:
            return bytes.fromhex(name[1:]).decode("utf-8")
        except ValueError:
            return None
    return None


def snapshot_row(user_id: str, buckets: int, groups: int) -> tuple[int, int]:
    """(bucket, group) of a user's snapshot: the bucket is `bucket_of` (the flag's too); the group
    uses the CRC's higher part, so it is independent of the bucket and as stable."""
    crc = zlib.crc32(user_id.encode("utf-8"))
    return crc % buckets, (crc // buckets) % groups


def snapshot_row_key(group: int) -> str:
    return f"g{group:03d}"


def snapshot_to_entity(tenant_id: str, user_id: str, upn: str, buckets: int, now: dt.datetime,
                       groups: int = SNAPSHOT_GROUPS) -> dict[str, Any]:
    """A MERGE into a user's grouped snapshot row carrying that user's last seen UPN only."""
    del now  # the row's Timestamp says when it last changed
    if not isinstance(upn, str) or not upn:
        raise InputError("a snapshot needs a non-empty UPN")
    bucket, group = snapshot_row(user_id, buckets, groups)
    return {"PartitionKey": bucket_partition(tenant_id, bucket), "RowKey": snapshot_row_key(group),
            snapshot_property(user_id): upn}


def snapshot_value(upn: str, seen_at: dt.datetime | None) -> str:
    """A user's snapshot property: the UPN, then (when known) a space and the moment the product read
    that UPN from Graph, so stale-passkey removal knows when the old UPN was last confirmed. A UPN
    never holds a space (Entra allows letters, digits and ' . - _ ! # ^ ~ @); `split_snapshot` reads it back."""
    if seen_at is None:
        return upn
    return f"{upn} {seen_at.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"


def snapshot_upn(value: str) -> str:
    """The UPN of a snapshot property (`split_snapshot` without parsing the time: the bulk load's path)."""
    upn, space, seen = value.rpartition(" ")
    return upn if space and _SEEN_AT.fullmatch(seen) else value


def split_snapshot(value: str) -> tuple[str, dt.datetime | None]:
    """(UPN, seen at or None) of a snapshot property; values written before the time was kept have none."""
    upn, space, seen = value.rpartition(" ")
    if not space or not _SEEN_AT.fullmatch(seen):
        return value, None
    return upn, dt.datetime.fromisoformat(seen)


class SnapshotTable:
    """The snapshots of one tenant: point reads of many users, MERGE writes, whole-table loads."""

    def __init__(self, tables: Tables, tenant_id: str, layout: Layout | None = None, *,
                 table: str = SNAPSHOTS) -> None:
        """`table`: another table of the same grouped rows (`holders`, whose values are flags)."""
        self._tables = tables
        self.tenant_id = tenant_id
        self.layout = layout or Layout()
        self.table = table

    @property
    def buckets(self) -> int:
        return self.layout.snapshot_buckets

    @property
    def groups(self) -> int:
        return self.layout.snapshot_groups

    def _keys(self, user_id: str) -> tuple[str, str, str]:
        bucket, group = snapshot_row(user_id, self.buckets, self.groups)
        return bucket_partition(self.tenant_id, bucket), snapshot_row_key(group), snapshot_property(user_id)

    async def get(self, user_ids: Iterable[str]) -> dict[str, str]:
        """Last seen UPN per user id (users never seen or deleted are absent); one point read per row."""
        return {uid: upn for uid, (upn, _) in (await self.get_seen(user_ids)).items()}

    async def get_seen(self, user_ids: Iterable[str]) -> dict[str, tuple[str, dt.datetime | None]]:
        """`get` with, per user, when that UPN was last read from Graph (None: not recorded)."""
        rows: dict[tuple[str, str], dict[str, str]] = {}  # (pk, rk) -> property -> user id
        for user_id in dict.fromkeys(user_ids):
            pk, rk, name = self._keys(user_id)
            rows.setdefault((pk, rk), {})[name] = user_id

        async def one(pk: str, rk: str, names: dict[str, str]) -> list[tuple[str, tuple[str, dt.datetime | None]]]:
            select = list(names) if len(names) <= _MAX_SELECT else None

            async def work(client: TableClient) -> dict[str, Any] | None:
                return await fastpath.get(client, pk, rk, select=select)

            entity = await self._tables.op(self.table, f"reading {self.table}", work) or {}
            return [(uid, split_snapshot(str(entity[name]))) for name, uid in names.items() if entity.get(name)]

        found = await self._tables.gather(one(pk, rk, names) for (pk, rk), names in rows.items())
        return dict(pair for pairs in found for pair in pairs)

    async def _merge(self, values: Mapping[str, str], action: str) -> None:
        """MERGE `{user id: value}` into the grouped rows: one operation per row, one transaction per
        partition (<= 100 rows each). A row's own users never exceed Table Storage's property limit."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for user_id, value in values.items():
            pk, rk, name = self._keys(user_id)
            rows.setdefault((pk, rk), {"PartitionKey": pk, "RowKey": rk})[name] = value
        for entity in rows.values():
            if len(entity) - 2 > MAX_CUSTOM_PROPERTIES:
                raise StateError(f"snapshot row {entity['RowKey']} of {entity['PartitionKey']} would hold "
                                 f"{len(entity) - 2} users; Table Storage allows {MAX_CUSTOM_PROPERTIES} properties")
            check_entity(entity)

        async def chunk_of(chunk: list[Mapping[str, Any]]) -> None:
            try:
                await self._tables.transaction(self.table, action, [("upsert", e, MERGE) for e in chunk])
            except StateError as exc:
                if "TooManyProperties" in str(exc) or "TooManyProperties" in str(exc.__cause__ or ""):
                    raise StateError(f"a snapshot row is full ({MAX_CUSTOM_PROPERTIES} users): more users than "
                                     f"{self.buckets} x {self.groups} rows can hold") from exc
                raise

        await self._tables.gather(chunk_of(c) for c in chunk_operations(rows.values()))

    async def put(self, upns: Mapping[str, str],
                  seen_at: Mapping[str, dt.datetime] | None = None) -> int:
        """Record last seen UPNs (MERGEs into the grouped rows), each with when it was read from Graph
        when `seen_at` has the user; returns how many users were written."""
        for upn in upns.values():
            if not isinstance(upn, str) or not upn:
                raise InputError("a snapshot needs a non-empty UPN")
        seen = seen_at or {}
        values = {uid: snapshot_value(upn, seen.get(uid)) for uid, upn in upns.items()}
        await self._merge(values, f"writing {self.table}")
        return len(upns)

    async def delete(self, user_ids: Iterable[str]) -> None:
        """Forget users (deleted accounts): their property becomes empty; never-seen users are fine."""
        await self._merge(dict.fromkeys(user_ids, ""), f"deleting {self.table}")

    async def rows(self) -> AsyncIterator[dict[str, str]]:
        """Every snapshot row of the tenant as `{user id: UPN}` (deleted users left out), one paged
        query per partition; partitions are read one after another."""
        for bucket in range(self.buckets):
            for row in await self._partition(bucket):
                yield row

    async def _partition(self, bucket: int, *, raw: bool = False) -> list[dict[str, str]]:
        read = (lambda value: value) if raw else snapshot_upn

        async def work(client: TableClient) -> list[dict[str, str]]:
            rows: list[dict[str, str]] = []
            async for entity in client.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": bucket_partition(self.tenant_id, bucket)},
                    results_per_page=MAX_PAGE):
                users = {uid: read(value) for name, value in entity.items()
                         if (uid := snapshot_user(name)) is not None and isinstance(value, str)}
                if len(users) > MAX_CUSTOM_PROPERTIES:  # Azurite doesn't enforce the limit; Azure would refuse
                    raise StateError(f"snapshot row {entity.get('RowKey')} holds {len(users)} users; Table "
                                     f"Storage allows {MAX_CUSTOM_PROPERTIES} properties")
                rows.append({uid: upn for uid, upn in users.items() if upn})
            return rows

        return await self._tables.op(self.table, f"reading {self.table}", work)

    async def compact(self) -> int:
        """Reclaim the properties of forgotten users (a MERGE can only empty a property, never remove it, so a
        deleted user's slot would stay taken): each row holding empty properties is replaced by its non-empty
        ones, while it is still the row read (its ETag). A row written meanwhile is left for the next time.
        Returns how many properties were reclaimed."""
        async def one(bucket: int) -> int:
            async def work(client: TableClient) -> int:
                reclaimed = 0
                async for entity in client.query_entities(
                        "PartitionKey eq @pk", parameters={"pk": bucket_partition(self.tenant_id, bucket)},
                        results_per_page=MAX_PAGE):
                    empty = [n for n, v in entity.items() if v == "" and snapshot_user(n) is not None]
                    if not empty:
                        continue
                    kept = {n: v for n, v in entity.items() if n not in empty}
                    if await replace_if_still(client, kept, entity):
                        reclaimed += len(empty)
                return reclaimed

            return await self._tables.op(self.table, f"compacting {self.table}", work)

        return sum(await self._tables.gather(one(b) for b in range(self.buckets)))

    async def load_all(self, *, raw: bool = False) -> dict[str, str]:
        """The whole snapshot table as `{user id: UPN}`: all partitions in parallel, ~1,000 rows for
        100k users. `raw` keeps each stored value (`snapshot_value`: the UPN and when it was seen), for the
        sweep, which splits only the few it queues."""
        parts = await self._tables.gather(self._partition(b, raw=raw) for b in range(self.buckets))
        out: dict[str, str] = {}
        for rows in parts:
            for row in rows:
                out.update(row)
        return out

    async def count(self) -> int:
        """How many users have a snapshot (deleted users not counted)."""
        parts = await self._tables.gather(self._partition(b) for b in range(self.buckets))
        return sum(len(row) for rows in parts for row in rows)
