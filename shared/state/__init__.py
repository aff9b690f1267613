"""The storage adapter: Table Storage (runs, plans, flags, snapshots, checkpoints, events) and the
`upn-changes` queue, over the async Azure SDKs. SDK exceptions are caught here and only here.

    store = StateStore.from_settings(settings)      # one per process
    await store.ensure()                            # optional: every call ensures lazily
    created = await store.create_flags(tenant, [flag])     # shared.upn.flag.Flag records
    stored = await store.get_flag(tenant, user_id)           # StoredFlag(flag, etag, ...) or None
    await store.queue.send([{"tenant": tenant, "user_ids": [...]}])
"""
from __future__ import annotations

from shared.state.codec import MAX_BATCH_OPERATIONS, MAX_ENTITY_BYTES, chunk_operations, entity_size
from shared.state.errors import StateAuthError, StateUnavailable
from shared.state.keys import bucket_of, decode_key, safe_key
from shared.state.queue import MAX_MESSAGE_BYTES, ChangeQueue, QueuedMessage
from shared.state.store import (
    ABSENT,
    CHECKPOINTS,
    EVENTS,
    FLAG_BUCKETS,
    FLAGS,
    PLANS,
    RUNS,
    SNAPSHOT_BUCKETS,
    SNAPSHOTS,
    TABLES,
    StateStore,
    StoredFlag,
)

__all__ = [
    "ABSENT", "CHECKPOINTS", "EVENTS", "FLAGS", "FLAG_BUCKETS", "MAX_BATCH_OPERATIONS", "MAX_ENTITY_BYTES",
    "MAX_MESSAGE_BYTES", "PLANS", "RUNS", "SNAPSHOTS", "SNAPSHOT_BUCKETS", "TABLES", "ChangeQueue",
    "QueuedMessage", "StateAuthError", "StateStore", "StateUnavailable", "StoredFlag", "bucket_of", "chunk_operations",
    "decode_key", "entity_size", "safe_key",
]
