"""Fixtures for the storage adapter: one private Azurite per session (HTTP, in memory), a TLS + OAuth
Azurite for the token path, a fresh tenant id per test, and a clock tests can move."""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from devhost.azurite import Azurite, start_azurite
from shared.config import StorageSettings
from shared.state import StateStore
from shared.upn.flag import Flag, PasskeyRef

DETECTED = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def make_flag(user_id: str, new_upn: str | None = None, **changes: Any) -> Flag:
    """A pending flag of `user_id` (old UPN `<id>@old.example`, one passkey); `changes` set other fields."""
    return Flag(user_id=user_id, old_upn=f"{user_id}@old.example", new_upn=new_upn or f"{user_id}@new.example",
                detected_at=DETECTED, source="sweep", passkeys=(PasskeyRef("p1"),), **changes)


class FakeClock:
    """An aware clock that only moves when told to (leases and event expiry without sleeping)."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A private in-memory Azurite on free ports, stopped by PID at the end of the session."""
    instance = start_azurite()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def azurite_oauth() -> Iterator[Azurite]:
    """Azurite over HTTPS with `--oauth basic` (the managed-identity code path)."""
    instance = start_azurite(oauth=True)
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def tenant() -> str:
    """A fresh tenant id, so tests sharing one Azurite never see each other's rows."""
    return str(uuid.uuid4())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(azurite: Azurite, clock: FakeClock, tenant: str) -> AsyncIterator[StateStore]:
    """A StateStore on the session Azurite (connection string), no SDK retries, with the fake clock."""
    instance = StateStore(StorageSettings(connection_string=azurite.connection_string), tenant_id=tenant,
                          retry_total=0, clock=clock)
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
async def other_store(azurite: Azurite, clock: FakeClock, tenant: str) -> AsyncIterator[StateStore]:
    """A second, independent StateStore on the same account: the "other writer"."""
    instance = StateStore(StorageSettings(connection_string=azurite.connection_string), tenant_id=tenant,
                          retry_total=0, clock=clock)
    try:
        yield instance
    finally:
        await instance.close()
