"""The simulator's one clock: frozen readings are whole seconds, so whole-second moves land exactly on a
window's edge, however the moves are split."""
from __future__ import annotations

from datetime import timedelta

from graphsim.clock import SimClock


def test_a_frozen_clock_stands_on_a_whole_second_and_split_moves_land_exactly() -> None:
    """Frozen, then moved 29 + 1, 119 + 1 or 3599 + 1 seconds: exactly 30, 120 and 3600 past the freeze,
    with no ulp left over (a test of "shown at 30 s" could otherwise fail now and then)."""
    for pieces in ([29.0, 1.0], [119.0, 1.0], [3599.0, 1.0], [0.5, 0.25, 0.25]):
        clock = SimClock()
        clock.freeze(True)
        frozen = clock.now()
        assert frozen == int(frozen)
        for piece in pieces:
            clock.advance(piece)
        assert clock.now() - frozen == sum(pieces)
        assert clock.since_start() == int(clock.since_start()) + (sum(pieces) % 1)


def test_graph_time_moves_with_the_clock_to_the_microsecond() -> None:
    """Graph's time is the start's wall time plus exactly how far the clock moved."""
    clock = SimClock()
    clock.freeze(True)
    before = clock.utcnow()
    clock.advance(3600.0)
    assert clock.utcnow() - before == timedelta(seconds=3600)


def test_a_released_clock_runs_on_from_where_it_stood() -> None:
    """Unfrozen after a move, the clock keeps the move and goes on running forward."""
    clock = SimClock()
    clock.freeze(True)
    clock.advance(100.0)
    stood = clock.now()
    clock.freeze(False)
    assert clock.now() >= stood
