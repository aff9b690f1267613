"""The storage adapter: Table Storage (runs, plans, flags, snapshots, checkpoints, events) and the
`upn-changes` and `policy-jobs` queues, over the async Azure SDKs. SDK exceptions are caught here and only here.

    store = StateStore.from_settings(settings)      # one per process
    await store.ensure()                            # optional: every call ensures lazily
    created = await store.flags.create([flag])      # bound to settings.tenant_id; Flag records
    stored = await store.flags.get(user_id)         # StoredFlag(flag, etag, ...) or None
    await store.queue.send(messages)                # upn-changes; shared.upn.messages builds them

The package exports the store and the few names its callers need; everything else is imported from the
module that defines it (`shared.state.tables`, `shared.state.codec`, ...).
"""
from __future__ import annotations

from shared.state.checkpoints import ABSENT
from shared.state.codec import MAX_BATCH_OPERATIONS
from shared.state.errors import StateAuthError, StateUnavailable
from shared.state.flags import StoredFlag
from shared.state.keys import bucket_of
from shared.state.queue import MAX_MESSAGE_BYTES
from shared.state.store import StateStore
from shared.state.tables import TABLES

__all__ = [
    "ABSENT", "MAX_BATCH_OPERATIONS", "MAX_MESSAGE_BYTES", "TABLES", "StateAuthError", "StateStore",
    "StateUnavailable", "StoredFlag", "bucket_of",
]
