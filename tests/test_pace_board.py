"""The pace board: the app's instances share one Graph budget through a checkpoint row in Table Storage
(Azurite here). Each test has two instances, each with its own RuPace and its own seat at the board."""
from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

from shared.config import StorageSettings
from shared.graph.budget import START_RU_PER_S, RuPace
from shared.pace_board import BOARD, PaceBoard
from shared.state import StateStore


@pytest.fixture
async def stores(azurite) -> AsyncIterator[tuple[StateStore, StateStore]]:
    """Two instances' own storage clients for one tenant on the session Azurite."""
    tenant = str(uuid.uuid4())
    pair = tuple(StateStore(StorageSettings(connection_string=azurite.connection_string), tenant_id=tenant,
                            retry_total=0) for _ in range(2))
    try:
        yield pair  # type: ignore[misc]
    finally:
        for store in pair:
            await store.close()


@pytest.fixture
def seats(stores):
    return PaceBoard(stores[0].checkpoints, member="a"), PaceBoard(stores[1].checkpoints, member="b")


async def test_a_429_of_one_instance_holds_the_other_until_its_retry_after(seats):
    """Instance a meets a 429 with Retry-After 30 s: after one exchange each, b holds until then too, and its
    own 429s in that window belong to the same burst (one cut, not one per 429)."""
    (a_seat, b_seat), a, b = seats, RuPace(), RuPace()
    await a_seat.sync(a)
    await b_seat.sync(b)
    a.pause(30, 0.9)
    await a_seat.sync(a)
    await b_seat.sync(b)
    assert b.paused_until >= time.monotonic() + 28 and b.throttled == 0


async def test_a_cut_of_one_instance_is_followed_once_by_the_other(seats):
    """a cuts its pace on a 429 near the limit; b, which did not meet it, cuts once on hearing of it, and not
    again at its next exchange."""
    (a_seat, b_seat), a, b = seats, RuPace(), RuPace()
    await a_seat.sync(a)
    await b_seat.sync(b)
    b_rate = b.rate
    a.pause(1, 0.95)
    await a_seat.sync(a)
    await b_seat.sync(b)
    assert b.rate <= b_rate / 2 + 1e-9
    followed = b.rate
    await b_seat.sync(b)
    assert b.rate == followed


async def test_a_newcomer_takes_its_share_and_the_others_make_room(seats, stores):
    """a has learned 80 RU/s alone; b joins at half of it instead of a slow start, and a shrinks to half at its
    next exchange, so the two together still send what a had learned."""
    (a_seat, b_seat), a, b = seats, RuPace(), RuPace()
    a.join(80.0)
    await a_seat.sync(a)
    await b_seat.sync(b)
    assert b.rate == pytest.approx(40.0) and not b.slow_start
    await a_seat.sync(a)
    assert a.rate == pytest.approx(40.0)
    board, _ = await stores[0].checkpoints.get(BOARD)
    assert set(board["members"]) == {"a", "b"}


async def test_an_instance_alone_keeps_its_slow_start(seats):
    """Nobody else at the board: the exchange changes nothing (the pace learns from Graph alone)."""
    a_seat, _ = seats
    a = RuPace()
    await a_seat.sync(a)
    assert a.slow_start and a.rate == START_RU_PER_S



async def test_the_call_pace_is_shared_too(stores):
    """The passkey reads' call pace has its own board: a refusal of instance a's reads holds b's until its
    Retry-After, b (which joined a at half its pace) eases its pace once, and a newcomer c starts at its share
    instead of a slow start."""
    from shared.graph.budget import CallPace
    from shared.pace_board import CALLS_BOARD

    a_seat, b_seat = (PaceBoard(s.checkpoints, member=m, name=CALLS_BOARD) for s, m in zip(stores, "ab", strict=True))
    a, b = CallPace(), CallPace()
    await a_seat.sync(a)
    await b_seat.sync(b)
    a.answered(6, 14, retry_after=20)  # the end of a's slow start: the limit met
    await a_seat.sync(a)
    b_rate = b.rate
    await b_seat.sync(b)
    assert b.paused_until >= time.monotonic() + 18 and b.refused == 0
    assert b.rate == pytest.approx(b_rate * CallPace.EASE)
    c = CallPace()
    await PaceBoard(stores[0].checkpoints, member="c", name=CALLS_BOARD).sync(c)
    assert not c.slow_start and c.rate == pytest.approx((a.rate + b.rate) / 3)


async def test_nothing_is_read_or_written_before_the_tenant_is_confirmed(stores):
    """A process whose Graph may answer for another tenant writes nothing to storage: the board waits until
    `ready()` (the gateway's tenant check) holds."""
    confirmed = [False]
    seat = PaceBoard(stores[0].checkpoints, member="a", ready=lambda: confirmed[0])
    pace = RuPace()
    pace.pause(5, 0.9)
    await seat.sync(pace)
    assert seat.exchanges == 0 and await stores[0].checkpoints.get(BOARD) == (None, None)
    confirmed[0] = True
    await seat.sync(pace)
    board, _ = await stores[0].checkpoints.get(BOARD)
    assert seat.exchanges == 1 and board["cuts"] == 1
