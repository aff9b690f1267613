"""Progress of a long run (a sweep, an apply, a plan's lockout evaluation), kept in its run record so people
can see how far it got (`python -m shared runs`, `GET /api/runs/{runId}`), and drawn as a bar on the
administrator's terminal.

    progress = {"phase", "done", "total" (None: unknown), "unit", "percent" (None: unknown),
                "ruSpent", "etaSeconds" (None: unknown), "updatedAt", "counts" (optional)}

A use case calls `begin` when a phase starts and `advance` after each page or step. The record is written
at most once every WRITE_EVERY_SECONDS (the first update always, and the run's recorder writes the last one
with the result), so a sweep of thousands of pages costs a write a second, not one a page. A progress write
that fails is logged and the work goes on: progress is for people, the run's result is what must be stored.

The ETA is the phase's rate so far (done since the phase began, over the time since) applied to what is
left, and only when the total is known honestly: a delta read of changes has no total, so it has no ETA.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

log = logging.getLogger(__name__)

WRITE_EVERY_SECONDS = 1.0
BAR_WIDTH = 24

Writer = Callable[[dict[str, Any]], Awaitable[None]]
Watcher = Callable[[dict[str, Any]], None]
_watcher: ContextVar[Watcher | None] = ContextVar("passkey_guard_progress_watcher", default=None)
_KEEP: Any = object()


@contextlib.contextmanager
def watched(watcher: Watcher | None) -> Iterator[None]:
    """Hand every update of the runs started in this context to `watcher` (the CLI's bar), page by page."""
    token = _watcher.set(watcher)
    try:
        yield
    finally:
        _watcher.reset(token)


def eta_seconds(done: int, total: int | None, elapsed: float) -> int | None:
    """Seconds left at the rate so far (`done` in `elapsed` seconds); None when the total is unknown, nothing
    is done yet, or more is done than the total said (the total was an estimate that fell short)."""
    if total is None or done <= 0 or elapsed <= 0 or done > total:
        return None
    return round((total - done) * elapsed / done)


async def _nowhere(progress: dict[str, Any]) -> None:
    """The writer of a progress nobody records."""


class Progress:
    """One run's progress: the current phase, how much of it is done, and when it was last written."""

    def __init__(self, write: Writer, *, spent: Callable[[], float] = lambda: 0.0) -> None:
        """`write` stores the progress in the run record; `spent` says how many RU the run has spent so far."""
        self._write = write
        self._spent = spent
        self._watch = _watcher.get()
        self._state: dict[str, Any] | None = None
        self._since = 0.0  # when the phase began (time.monotonic)
        self._written: float | None = None  # when the record was last written (time.monotonic)

    @classmethod
    def untracked(cls) -> Progress:
        """A progress that is recorded nowhere (a use case called without a run)."""
        return cls(_nowhere)

    def view(self) -> dict[str, Any] | None:
        """The progress as the run record holds it; None before the first phase began."""
        if self._state is None:
            return None
        done, total = self._state["done"], self._state["total"]
        out = {**self._state, "percent": None if not total else min(100.0, round(100 * done / total, 1)),
               "ruSpent": round(self._spent(), 1),
               "etaSeconds": eta_seconds(done, total, time.monotonic() - self._since),
               "updatedAt": datetime.now(UTC).isoformat(timespec="seconds")}
        if not out["counts"]:
            del out["counts"]
        return out

    def final(self) -> dict[str, Any] | None:
        """The progress the finished run keeps: where it ended, with no ETA."""
        view = self.view()
        return None if view is None else {**view, "etaSeconds": None}

    async def begin(self, phase: str, *, unit: str, total: int | None = None) -> None:
        """A phase starts: nothing of it done yet, its rate measured from now."""
        self._since = time.monotonic()
        self._state = {"phase": phase, "done": 0, "total": total, "unit": unit, "counts": {}}
        await self._publish()

    async def advance(self, done: int, *, total: Any = _KEEP, counts: Mapping[str, int] | None = None) -> None:
        """`done` of the phase are done now (and the total, or other counts, are these)."""
        if self._state is None:
            raise RuntimeError("begin() a phase before advancing it")
        self._state["done"] = done
        if total is not _KEEP:
            self._state["total"] = total
        if counts is not None:
            self._state["counts"] = dict(counts)
        await self._publish()

    async def _publish(self) -> None:
        view = self.view()
        assert view is not None
        if self._watch is not None:
            try:
                self._watch(view)
            except Exception as exc:  # a bar that cannot draw must not stop the work
                log.debug("the progress watcher failed: %s", type(exc).__name__)
        now = time.monotonic()
        if self._written is not None and now - self._written < WRITE_EVERY_SECONDS:
            return
        self._written = now
        try:
            await self._write(view)
        except Exception as exc:  # progress is for people: the work goes on, the final record is still written
            log.warning("the run's progress could not be recorded (%s); the run goes on", type(exc).__name__)


# --- showing it ----------------------------------------------------------------------------------
def duration_text(seconds: float) -> str:
    """`1h 02m`, `3m 05s` or `12s`."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _amount(progress: Mapping[str, Any]) -> str:
    done, total, unit = progress.get("done", 0), progress.get("total"), progress.get("unit", "")
    if total is None:
        return f"{done:,} {unit} (total unknown)" if done else ""  # a step with nothing to count yet
    percent = progress.get("percent")
    return f"{done:,}/{total:,} {unit}" + (f" ({percent:g}%)" if percent is not None else "")


def describe_progress(progress: Mapping[str, Any] | None, *, running: bool = True) -> str:
    """One line for people: `seeding 4,500/10,000 users (45%), ETA 1m 05s, 46 RU spent`; a finished run's
    line has no ETA. Empty when the run recorded no progress."""
    if not progress:
        return ""
    parts = [" ".join(p for p in (str(progress.get("phase", "?")), _amount(progress)) if p)]
    if running:
        eta = progress.get("etaSeconds")
        parts.append("ETA unknown" if eta is None else f"ETA {duration_text(eta)}")
    if progress.get("ruSpent"):
        parts.append(f"{progress['ruSpent']:g} RU spent")
    return ", ".join(parts)


def describe_details(details: Mapping[str, Any] | None) -> str:
    """A sweep's passkey details for people: `passkey details read for 1,200/2,000 users (60%), ETA 2m 13s`;
    empty without any."""
    if not details:
        return ""
    text = f"passkey details read for {details['read']:,}/{details['total']:,} users ({details['percent']:g}%)"
    if details["read"] < details["total"]:
        eta = details.get("etaSeconds")
        text += ", ETA unknown" if eta is None else f", ETA {duration_text(eta)}"
    return text


def render_bar(progress: Mapping[str, Any], width: int = BAR_WIDTH) -> str:
    """The terminal's progress line: a bar of `width` cells when the total is known, then the line of
    `describe_progress`."""
    percent = progress.get("percent")
    if percent is None:
        return describe_progress(progress)
    filled = round(width * percent / 100)
    return f"[{'#' * filled}{'.' * (width - filled)}] {describe_progress(progress)}"


class TerminalBar:
    """Draws the progress on one terminal line, redrawn in place at each update."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.drawn = False

    def draw(self, progress: dict[str, Any]) -> None:
        self.stream.write("\r" + render_bar(progress) + "\x1b[K")  # carriage return, then clear the old rest
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        """End the line, so what the command prints next starts on its own."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def terminal_bar(stream: TextIO) -> TerminalBar | None:
    """A bar on `stream` when it is a terminal; None otherwise (pipes, logs and tests stay clean)."""
    try:
        return TerminalBar(stream) if stream.isatty() else None
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return None
