"""StateStore, the facade: tables and queues created once, the health ping, and ids with any characters
through every table."""
from __future__ import annotations

import datetime as dt
import socket
from typing import Any

from devhost.azurite import Azurite
from shared.config import StorageSettings
from shared.state import TABLES, StateStore
from tests.state.conftest import make_flag

WEIRD_IDS = ["a/b", "c#d", "e?f", "g\\h", "tab\tid", "ü/ñ", "p|q", "~x"]


def flag(user_id: str, new_upn: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"userId": user_id, "oldUpn": f"{user_id}@old.example", "newUpn": new_upn or f"{user_id}@new.example",
            **extra}


def run(run_id: str, started: dt.datetime, **extra: Any) -> dict[str, Any]:
    return {"id": run_id, "started_at": started, "trigger": "timer", "mode": "audit", **extra}


async def test_ensure_creates_all_tables_and_is_idempotent(store: StateStore, azurite: Azurite) -> None:
    """ensure() creates every table and the queue, and running it again (or from a 2nd store) is harmless."""
    await store.ensure()
    await store.ensure(force=True)
    again = StateStore(StorageSettings(connection_string=azurite.connection_string), tenant_id="t", retry_total=0)
    try:
        await again.ensure()
        service = await again._clients.table_service()
        names = {t.name async for t in service.list_tables()}
        assert set(TABLES) <= names
        assert await again.queue.peek_count() >= 0
    finally:
        await again.close()


async def test_ping_reports_up_and_down(store: StateStore) -> None:
    """ping() is True against Azurite and False (without raising) against a port nobody listens on."""
    assert await store.ping() is True
    with socket.socket() as bound_not_listening:
        bound_not_listening.bind(("127.0.0.1", 0))
        port = bound_not_listening.getsockname()[1]
        endpoint = f"http://127.0.0.1:{port}/devstoreaccount1"
        dead = StateStore(StorageSettings(connection_string=(
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            f"TableEndpoint={endpoint};QueueEndpoint={endpoint};")), tenant_id="t", retry_total=0)
        try:
            assert await dead.ping(within=3) is False
        finally:
            await dead.close()


async def test_row_key_encoding_of_forbidden_characters(store: StateStore, tenant: str) -> None:
    """User, run, plan and checkpoint ids with / # ? \\ and controls are stored and listed verbatim."""
    created = await store.flags.create([make_flag(u) for u in WEIRD_IDS])
    assert created == WEIRD_IDS
    for user_id in WEIRD_IDS:
        got = await store.flags.get(user_id)
        assert got is not None and got.flag.user_id == user_id
    listed = [f.flag.user_id async for f in store.flags.every()]
    assert sorted(listed) == sorted(WEIRD_IDS)
    await store.runs.put(run("r/1#?\\", dt.datetime.now(dt.UTC)))
    assert (await store.runs.get("r/1#?\\"))["id"] == "r/1#?\\"
    await store.checkpoints.put("delta/users#1", {"link": "https://graph/?$deltatoken=a#b"})
    value, _ = await store.checkpoints.get("delta/users#1")
    assert value == {"link": "https://graph/?$deltatoken=a#b"}
    await store.snapshots.put({u: f"{abs(hash(u))}@x.example" for u in WEIRD_IDS})
    assert set(await store.snapshots.get(WEIRD_IDS)) == set(WEIRD_IDS)


async def test_a_store_is_bound_to_its_tenant(store: StateStore, tenant: str) -> None:
    """Every table of a store reads and writes its own tenant's rows only; `for_tenant` shares the clients
    under another tenant, which sees none of them."""
    await store.flags.create([make_flag("u1")])
    await store.checkpoints.put("delta", {"link": "x"})
    other = store.for_tenant(f"{tenant}-other")
    assert other.tenant_id != store.tenant_id and other.queue is store.queue
    assert await other.flags.get("u1") is None and await other.checkpoints.get("delta") == (None, None)
    stored = await store.flags.get("u1")
    assert stored is not None and stored.flag.user_id == "u1"
    assert (await store.checkpoints.get("delta"))[0] == {"link": "x"}
