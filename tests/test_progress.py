"""A long run's progress: written at most about once a second (the first update always), an ETA only from a
known total and the rate so far, a failing write never stopping the work, and the line and bar people see."""
from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import pytest

import shared.progress as progress_module
from shared.progress import (
    Progress,
    TerminalBar,
    describe_progress,
    duration_text,
    eta_seconds,
    render_bar,
    terminal_bar,
    watched,
)


class Clock:
    """time.monotonic for shared.progress, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moved = Clock()
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=moved.monotonic))
    return moved


def recorder() -> tuple[list[dict[str, Any]], Any]:
    written: list[dict[str, Any]] = []

    async def write(view: dict[str, Any]) -> None:
        written.append(view)

    return written, write


async def test_the_first_update_is_written_and_then_at_most_one_a_second(clock):
    """Ten pages within a second write the record once; a page after the second has passed writes again."""
    written, write = recorder()
    progress = Progress(write, spent=lambda: 7.0)
    await progress.begin("seeding", unit="users", total=100)
    for page in range(1, 11):
        clock.now += 0.05
        await progress.advance(page * 5)
    assert [w["done"] for w in written] == [0]
    clock.now += 1.0
    await progress.advance(55)
    assert [w["done"] for w in written] == [0, 55]
    last = written[-1]
    assert last["phase"] == "seeding" and last["total"] == 100 and last["unit"] == "users"
    assert last["percent"] == 55.0 and last["ruSpent"] == 7.0 and last["updatedAt"].endswith("+00:00")


async def test_the_eta_is_the_rate_so_far_applied_to_what_is_left(clock):
    """40 of 100 users in 8 s: 60 left at 5 a second is 12 s; the rate restarts with each phase."""
    written, write = recorder()
    progress = Progress(write)
    await progress.begin("seeding", unit="users", total=100)
    assert written[-1]["etaSeconds"] is None  # nothing done yet: no rate
    clock.now += 8
    await progress.advance(40)
    assert written[-1]["etaSeconds"] == 12
    clock.now += 2
    await progress.begin("writes", unit="writes", total=4)
    clock.now += 1
    await progress.advance(1)
    assert written[-1]["phase"] == "writes" and written[-1]["etaSeconds"] == 3


async def test_an_unknown_total_has_no_eta_and_no_percent(clock):
    """A read of changes has no total: the record says so (None), and people read "unknown"."""
    written, write = recorder()
    progress = Progress(write)
    await progress.begin("reading changes", unit="users")
    clock.now += 5
    await progress.advance(300, counts={"pages": 3, "changedUsers": 12})
    shown = written[-1]
    assert shown["total"] is None and shown["percent"] is None and shown["etaSeconds"] is None
    assert shown["counts"] == {"pages": 3, "changedUsers": 12}
    assert describe_progress(shown) == "reading changes 300 users (total unknown), ETA unknown"


def test_eta_is_none_when_the_total_fell_short():
    """An estimated total that more users overtook gives no ETA rather than a negative one."""
    assert eta_seconds(120, 100, 10.0) is None
    assert eta_seconds(100, 100, 10.0) == 0
    assert eta_seconds(0, 100, 10.0) is None


async def test_a_failing_write_is_logged_and_the_work_goes_on(clock, caplog):
    """Storage refusing the progress write does not raise into the use case; the next due update writes."""
    attempts: list[int] = []

    async def flaky(view: dict[str, Any]) -> None:
        attempts.append(view["done"])
        if len(attempts) == 1:
            raise ConnectionError("storage went away")

    progress = Progress(flaky)
    await progress.begin("seeding", unit="users", total=10)
    clock.now += 1.5
    await progress.advance(5)
    assert attempts == [0, 5]
    assert "could not be recorded (ConnectionError)" in caplog.text


async def test_the_final_progress_has_no_eta(clock):
    """A finished run keeps where it ended, without an ETA."""
    _, write = recorder()
    progress = Progress(write)
    assert progress.final() is None
    await progress.begin("seeding", unit="users", total=10)
    clock.now += 2
    await progress.advance(5)
    assert progress.view()["etaSeconds"] == 2  # type: ignore[index]
    assert progress.final()["etaSeconds"] is None  # type: ignore[index]


async def test_a_watcher_sees_every_update_and_a_broken_one_stops_nothing(clock):
    """The CLI's bar gets each page, not one a second; a watcher that raises does not stop the run."""
    seen: list[int] = []
    _, write = recorder()
    with watched(lambda view: seen.append(view["done"])):
        progress = Progress(write)
    await progress.begin("seeding", unit="users", total=10)
    for done in (2, 4, 6):
        await progress.advance(done)
    assert seen == [0, 2, 4, 6]

    def broken(view: dict[str, Any]) -> None:
        raise OSError("terminal closed")

    with watched(broken):
        other = Progress(write)
    await other.begin("seeding", unit="users", total=10)
    await other.advance(3)
    assert other.view()["done"] == 3  # type: ignore[index]


def test_the_bar_shows_the_share_done_the_amount_and_the_eta():
    """Half of 10,000 users: half the cells filled, the counts with thousands separators, the ETA."""
    shown = {"phase": "seeding", "done": 5000, "total": 10000, "unit": "users", "percent": 50.0,
             "ruSpent": 51.0, "etaSeconds": 65}
    assert render_bar(shown, width=10) == (
        "[#####.....] seeding 5,000/10,000 users (50%), ETA 1m 05s, 51 RU spent")
    unknown = {**shown, "total": None, "percent": None, "etaSeconds": None, "ruSpent": 0}
    assert render_bar(unknown, width=10) == "seeding 5,000 users (total unknown), ETA unknown"


def test_a_finished_run_is_described_without_an_eta():
    """`runs` shows where a finished run ended, not an ETA."""
    shown = {"phase": "writes", "done": 4, "total": 4, "unit": "writes", "percent": 100.0, "etaSeconds": None}
    assert describe_progress(shown, running=False) == "writes 4/4 writes (100%)"
    assert describe_progress(None) == ""


def test_durations_read_as_people_say_them():
    """Seconds, minutes and seconds, hours and minutes."""
    assert [duration_text(s) for s in (0, 12, 65, 3720)] == ["0s", "12s", "1m 05s", "1h 02m"]


def test_nothing_is_drawn_when_the_stream_is_not_a_terminal():
    """A pipe or a file (tests, logs, CI) gets no bar at all."""
    assert terminal_bar(io.StringIO()) is None


def test_a_terminal_bar_redraws_one_line_and_ends_it():
    """On a terminal each update rewrites the same line; closing ends the line once."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = terminal_bar(stream)
    assert isinstance(bar, TerminalBar)
    view = {"phase": "seeding", "done": 1, "total": 2, "unit": "users", "percent": 50.0, "etaSeconds": 1}
    bar.draw(view)
    bar.draw({**view, "done": 2, "percent": 100.0, "etaSeconds": 0})
    bar.close()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\x1b[K\n") and "2/2 users (100%)" in text


def test_a_step_with_nothing_counted_yet_shows_its_name_only():
    """`reading the tenant` is not "0 reads (total unknown)"."""
    shown = {"phase": "reading the tenant", "done": 0, "total": None, "unit": "reads", "etaSeconds": None}
    assert describe_progress(shown) == "reading the tenant, ETA unknown"
