"""Batched state writes against single upserts, on Azurite.

    python -m bench.state_writes --json [--entities 2000]

- `batched_entities_per_s`: flags through `StateStore.create_flags` then snapshots through
  `put_snapshots` (transactions of <= 100 per partition, partitions concurrently): the product's path.
- `single_entities_per_s`: the same entities as one `upsert_entity` each, one after another (what a
  per-user write loop does).
- `concurrent_single_entities_per_s`: single upserts again, 16 in flight (for reference).
`ratio` = batched / single (target >= 5); `ratio_vs_concurrent_single` for reference. Azurite is not
Azure (platform-limits.md): compare the ratios, not the absolute figures.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
import uuid
from typing import TYPE_CHECKING, Any

from bench.common import base_parser, emit, machine

if TYPE_CHECKING:
    from shared.upn.flag import Flag


def flag_doc(n: int) -> Flag:
    """A realistic flag (one passkey, one history entry)."""
    from shared.upn.flag import Flag, FlagStatus, HistoryEntry, PasskeyRef

    now = dt.datetime.now(dt.UTC)
    uid = str(uuid.UUID(int=n + 1, version=4))
    return Flag(user_id=uid, old_upn=f"user{n}@contoso.example", new_upn=f"user{n}@fabrikam.example",
                detected_at=now, source="sweep",
                passkeys=(PasskeyRef(id=f"key{n:08d}AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA0",
                                     aa_guid="cb69481e-8ff7-4039-93ec-0a2729a154a8", display_name="YubiKey 5 NFC"),),
                history=(HistoryEntry(now, FlagStatus.PENDING, "UPN changed; 1 passkey(s)"),))


async def run(count: int) -> dict[str, Any]:
    from devhost.azurite import start_azurite
    from shared.config import StorageSettings
    from shared.state import StateStore
    from shared.state.flags import flag_to_entity
    from shared.state.snapshots import snapshot_to_entity

    with start_azurite() as azurite:
        store = StateStore(StorageSettings(connection_string=azurite.connection_string), tenant_id="bench")
        try:
            await store.ensure()
            half = count // 2
            flags = [flag_doc(n) for n in range(half)]
            snaps = {str(uuid.UUID(int=10**9 + n, version=4)): f"user{n}@fabrikam.example"
                     for n in range(count - half)}

            fresh = store.for_tenant(str(uuid.uuid4()))
            started = time.perf_counter()
            created = await fresh.flags.create(flags)
            written = await fresh.snapshots.put(snaps)
            batched_s = time.perf_counter() - started
            assert len(created) == half and written == count - half, (len(created), written)

            now = dt.datetime.now(dt.UTC)

            def entities(tenant_id: str) -> list[dict[str, Any]]:
                return ([flag_to_entity(tenant_id, f, store.flag_buckets, created_at=now, updated_at=now)
                         for f in flags] +
                        [snapshot_to_entity(tenant_id, u, upn, store.snapshot_buckets, now)
                         for u, upn in snaps.items()])

            flag_client = await store._clients.table("flags")
            snap_client = await store._clients.table("snapshots")
            tenant = str(uuid.uuid4())
            ents = entities(tenant)
            started = time.perf_counter()
            for i, entity in enumerate(ents):
                await (flag_client if i < half else snap_client).upsert_entity(entity)
            single_s = time.perf_counter() - started

            tenant = str(uuid.uuid4())
            ents = entities(tenant)
            limit = asyncio.Semaphore(16)

            async def one(i: int, entity: dict[str, Any]) -> None:
                async with limit:
                    await (flag_client if i < half else snap_client).upsert_entity(entity)

            started = time.perf_counter()
            await asyncio.gather(*(one(i, e) for i, e in enumerate(ents)))
            concurrent_s = time.perf_counter() - started
        finally:
            await store.close()
    batched, single, concurrent = count / batched_s, count / single_s, count / concurrent_s
    return {
        "benchmark": "state_writes", "entities": count, "flags": half, "snapshots": count - half,
        "batched_entities_per_s": round(batched, 1), "single_entities_per_s": round(single, 1),
        "concurrent_single_entities_per_s": round(concurrent, 1),
        "ratio": round(batched / single, 2), "ratio_vs_concurrent_single": round(batched / concurrent, 2),
        "batched_seconds": round(batched_s, 3), "single_seconds": round(single_s, 3),
        "machine": machine(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], graph=False)  # Azurite only
    parser.add_argument("--entities", type=int, default=2000)
    args = parser.parse_args(argv)
    result = asyncio.run(run(200 if args.smoke else max(32, args.entities)))
    emit(result, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
