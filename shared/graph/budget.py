"""A client-side pace per tenant that learns Graph's resource-unit limit, so bulk reads run near it, not into 429s.

Graph meters identity reads in resource units (RU) per app and tenant, in a bucket whose size depends on the
tenant and may change (platform-limits.md: 3,500 to 8,000 RU per 10 s, and "Graph may 429 below them"). The
product is never told the bucket, so it learns the pace from what Graph says back:

- every metered answer without `x-ms-throttle-limit-percentage` (Graph sends it only above 80 % of a limit)
  while the pace held a spender back: go faster, by `SLOW_START_GROWTH` a second until the first sign of the
  limit (the "slow start"), then half way back to the pace that last met the limit and gently (`GROWTH`) past;
- the header present: the first time, halve (the bucket that masked the overshoot is nearly spent); after
  that, slow down (`EASE`, or halve when it would reach 100 % within `RUNWAY_S`) while it climbs, and speed up
  while it falls;
- a 429: nobody of the tenant spends until its `Retry-After` (usage keeps counting while throttled, so
  hammering only lengthens the penalty), and the pace is halved, once for all the 429s of one burst.

Every slowdown applies to the RU actually sent, not to the pace allowed, which nobody may have used.
It starts at `START_RU_PER_S`, Graph's smallest published tier, and never passes `CEILING_RU_PER_S`, the
app's own limit across all tenants. Bulk paths `spend()` before each request; reads that must not queue (the
sweep's sequential delta pages) `charge()` and later spenders wait out the debt; the gateway `observe()`s each
metered answer and `pause()`s on a 429.

Authentication-method reads (`users/{id}/authentication/*`) also meet a per-tenant limit in calls, far below the
RU limit and unpublished: `CallPace` learns it from the calls Graph accepts. Those reads still spend their RU
here, but their answers teach only the call pace (the header on them may speak of either limit), and so do
their 429s, except those in the app's own RU scope (`x-ms-throttle-scope: Tenant_Application/...`).

Graph's reports limit (5 requests per 10 s per app and tenant, published) is kept by a `FixedPace`, which has
nothing to learn.

Both paces are `SharedPace`s: with several instances of the app, `shared/pace_board.py` lets them share what
each learns, so adding an instance does not multiply the 429s.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

#: Graph's smallest published tier (S, under 50 users): 3,500 RU per 10 s. Below any large tenant's 800 RU/s.
START_RU_PER_S = 350.0
#: Graph's limit per app across all tenants: 150,000 RU per 20 s. No tenant can be faster.
CEILING_RU_PER_S = 7500.0
#: Never slower than this, so a run of 429s cannot stop the tenant's work for good.
FLOOR_RU_PER_S = 1.0
#: The pace changes at most once per interval (seconds): answers in flight still describe the old pace.
INTERVAL_S = 1.0
#: Growth per interval: before the first sign of the limit, and after it.
SLOW_START_GROWTH = 1.3
GROWTH = 1.05
#: Slowing per interval while `x-ms-throttle-limit-percentage` climbs, and the cut on a 429 or on leaving the
#: slow start.
EASE = 0.9
CUT = 0.5
#: A header value this high slows the pace even when it is not climbing: the next burst could be a 429.
HIGH = 0.95
#: A header climbing fast enough to reach 100 % within this many seconds halves the pace instead of easing it.
RUNWAY_S = 3 * INTERVAL_S
#: Our own bucket holds this many seconds of the pace, so concurrent spenders may go in a short burst.
BURST_S = 0.25
#: With other instances of the app (`peer`), their news is exchanged at most this often (seconds).
PEER_SYNC_S = 1.0
#: Another instance's cut is followed unless we cut this recently ourselves (the same burst of 429s).
FOLLOW_WINDOW_S = 2 * PEER_SYNC_S


class SharedPace:
    """What a pace shares with the app's other instances (`shared/pace_board.py`): `peer` exchanges news at most
    every PEER_SYNC_S while the pace is used, in the background (the first exchange before the first call, so a
    newcomer joins the others' pace instead of overshooting); the subclass says what a peer's 429 (`hold`), cut
    (`follow_cut`) and learned pace (`join`) mean for it, and counts its own `cuts`."""

    rate: float

    def _init_peers(self) -> None:
        self.cuts = 0  # times a 429 cut this pace (the other instances follow each: `follow_cut`)
        self.peer: Callable[[SharedPace], Awaitable[None]] | None = None
        self._peer_task: asyncio.Task[None] | None = None
        self._peer_at = float("-inf")

    def clock(self) -> float:
        """This pace's monotonic clock (a peer's pause is converted to it)."""
        return time.monotonic()

    async def _hear_peers(self) -> None:
        first = self.peer is not None and self._peer_at == float("-inf")
        self._sync_peers()
        if first and self._peer_task is not None:
            await asyncio.wait([self._peer_task], timeout=PEER_SYNC_S)

    def _sync_peers(self) -> None:
        """Start an exchange with the other instances when one is due and none is running."""
        now = time.monotonic()
        if self.peer is None or now - self._peer_at < PEER_SYNC_S or (self._peer_task and not self._peer_task.done()):
            return
        self._peer_at = now
        self._peer_task = asyncio.ensure_future(self.peer(self))

    async def stop_peers(self) -> None:
        """Let an exchange in progress finish (its write is one call), and start no more."""
        self.peer = None
        if self._peer_task is not None and not self._peer_task.done():
            await asyncio.wait([self._peer_task], timeout=5.0)

    @property
    def paused_until(self) -> float:
        """When the pause in force ends (monotonic; in the past when none is)."""
        raise NotImplementedError

    def hold(self, until: float) -> None:
        raise NotImplementedError

    def follow_cut(self) -> None:
        raise NotImplementedError

    def join(self, rate: float) -> None:
        raise NotImplementedError


class RuPace(SharedPace):
    """A token bucket in RU whose refill rate (`rate`, RU/s) is learned from Graph's answers (`observe`, `pause`)."""

    def __init__(self, start_ru_per_s: float = START_RU_PER_S) -> None:
        if start_ru_per_s <= 0:
            raise ValueError("the starting pace must be positive")
        self.start_ru_per_s = float(start_ru_per_s)
        self.spent = 0.0
        self.waited_seconds = 0.0
        self.throttled = 0  # 429s reported through `pause`
        self._init_peers()
        self._lock = asyncio.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget what was learned: the starting pace, a full burst, no pause (a fresh process; benchmarks)."""
        now = time.monotonic()
        self.rate = self.start_ru_per_s
        self.slow_start = True
        self._level = self.rate * BURST_S
        self._stamp = now
        self._paused_until = 0.0
        self._cut_until = 0.0  # 429s before this belong to a burst already cut for
        self._last_adjust = now
        self._held_back = False  # a spender waited for the pace since the last adjustment
        self._spent_since_adjust = 0.0
        self._last_percentage: float | None = None  # the latest header value (None: under 80 %)
        self._reference_percentage: float | None = None  # ... and the one seen at the last change of pace
        self._limit_rate: float | None = None  # the pace sent when the limit was last met
        self._settling = False  # after a 429: the next interval only takes a reference reading
        self._last_sending: float | None = None  # RU/s actually sent in the last interval
        self._last_cut = float("-inf")  # when the pace was last slowed down

    @property
    def capacity(self) -> float:
        return self.rate * BURST_S

    def _refill(self, now: float) -> None:
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    async def spend(self, units: float = 1.0) -> None:
        """Wait until the pace allows `units` RU (and no pause is in force), then take them."""
        await self._hear_peers()
        async with self._lock:  # FIFO: one waiter at a time keeps the pace smooth and fair
            while True:
                now = time.monotonic()
                self._refill(now)
                need = min(units, self.capacity)  # a request bigger than the burst goes into debt
                wait = max(self._paused_until - now, (need - self._level) / self.rate if self._level < need else 0.0)
                if wait <= 1e-9:  # float dust must not make a spender sleep for no time, over and over
                    self._level -= units
                    self.spent += units
                    self._spent_since_adjust += units
                    return
                self._held_back = True
                self.waited_seconds += wait
                await asyncio.sleep(wait)

    @property
    def paused_until(self) -> float:
        """When the pause in force ends (monotonic; in the past when none is)."""
        return self._paused_until

    def hold(self, until: float) -> None:
        """Another instance met a 429: nobody here spends until `until` (monotonic) either. Not counted as
        our 429, and the 429s our requests in flight meet until then belong to the same burst."""
        self._paused_until = max(self._paused_until, until)
        self._cut_until = max(self._cut_until, until)
        self._level = min(self._level, 0.0)

    def follow_cut(self) -> None:
        """Another instance cut the tenant's pace on a 429: cut ours as well, so the app as a whole slows
        down by the same factor (each instance learning alone, the others would keep sending). Not when we
        cut for the same burst ourselves (within `FOLLOW_WINDOW_S`): the app would slow down twice."""
        now = time.monotonic()
        self.slow_start = False
        if now - self._last_cut >= FOLLOW_WINDOW_S:
            self._slow_down(CUT, now)

    def join(self, rate: float) -> None:
        """Start at the pace the other instances learned, instead of a slow start from the smallest tier."""
        self.slow_start = False
        self._set_rate(rate, time.monotonic())

    def charge(self, units: float = 1.0) -> None:
        """Take `units` now without waiting (into debt, which later spenders wait out).

        For calls that must not queue behind bulk spenders, such as the sweep's sequential delta pages:
        the lookups they feed wait instead.
        """
        self._refill(time.monotonic())
        self._level -= units
        self.spent += units
        self._spent_since_adjust += units

    def observe(self, limit_percentage: float | None) -> None:
        """A metered answer came back (not a 429) with this `x-ms-throttle-limit-percentage` (0.8..1.8), or None.

        Graph's bucket is above 80 % used while the header comes: a climbing value means we spend faster than
        it refills, a falling one slower. The pace changes once an interval, comparing with the value seen at
        the last change; only the first sign of the limit acts at once (the slow start overshoots most).
        """
        now = time.monotonic()
        percentage = limit_percentage if limit_percentage is not None and limit_percentage >= 0.8 else None
        self._last_percentage = percentage
        if percentage is not None and self.slow_start:
            self.slow_start = False
            self._slow_down(CUT, now)
            return
        if now - self._last_adjust < INTERVAL_S or now < self._cut_until:
            return
        if self._settling:  # the first interval after a 429's pause: the bucket refilled while paused
            self._settling = False
            self._reset_interval(now)
            return
        reference = self._reference_percentage
        if percentage is not None and (reference is None or percentage > reference or percentage >= HIGH):
            # At this climb Graph's bucket runs out within a few intervals: halve, not ease.
            climb = (percentage - (reference or 0.8)) / (now - self._last_adjust)
            soon = climb > 0 and (1.0 - percentage) / climb < RUNWAY_S
            self._slow_down(CUT if soon or percentage >= 1.0 else EASE, now)
        elif percentage is None or (reference is not None and percentage < reference):
            if self._held_back:  # only a pace that held somebody back is known to be too slow
                self._set_rate(self._grown(), now)
            else:
                self._reset_interval(now)
        else:
            self._reset_interval(now)

    def pause(self, seconds: float, limit_percentage: float | None = None) -> None:
        """Graph said 429 with `Retry-After: seconds`: nobody spends until then, and the pace is cut once a burst.

        A 429 is the tenant's limit when the 429 itself or the answers before it said the limit was near
        (`x-ms-throttle-limit-percentage` of 80 % or more): then the pace halves, as low as `FLOOR_RU_PER_S`.
        A 429 while Graph said we were under 80 % is not our pace's to learn from (a transient refusal, a
        storm, another limit): the pause is kept all the same, but the cut stops at the smallest published
        tier, or a storm of such 429s would halve the pace to the floor and stall the tenant's work for hours
        while sending slower would not have avoided one of them.
        """
        now = time.monotonic()
        self._refill(now)
        self.throttled += 1
        self._paused_until = max(self._paused_until, now + seconds)
        self._level = min(self._level, 0.0)
        self.slow_start = False
        if now >= self._cut_until:
            self.cuts += 1
            near_limit = (limit_percentage or 0.0) >= 0.8 or self._last_percentage is not None
            self._slow_down(CUT, now, floor=FLOOR_RU_PER_S if near_limit else min(self.rate, self.start_ru_per_s))
            # Until the pause ends, 429s answer requests sent before it, at the old pace: one cut covers them.
            self._cut_until = self._paused_until
            self._settling = True
            self._last_adjust = self._paused_until  # what is sent is measured from when sending resumes

    def _sending(self, now: float) -> float:
        """The pace actually used since the last adjustment (RU/s), at most the allowed one: a slowdown cuts
        what was sent, or an allowed pace that nobody used would make it no slowdown at all."""
        elapsed = now - self._last_adjust
        if elapsed < INTERVAL_S / 2:  # too short to tell: what the last interval sent
            return min(self.rate, self._last_sending) if self._last_sending is not None else self.rate
        return min(self.rate, self._spent_since_adjust / elapsed)

    def _grown(self) -> float:
        """The next, faster pace: doubled in the slow start; else half way back to the pace that last met the
        limit, and gently past it (Graph's bucket may have grown, or the other spenders gone)."""
        if self.slow_start:
            return self.rate * SLOW_START_GROWTH
        if self._limit_rate is not None and self.rate < self._limit_rate * EASE:
            return self.rate + (self._limit_rate - self.rate) / 2
        return self.rate * GROWTH

    def _slow_down(self, factor: float, now: float, floor: float = FLOOR_RU_PER_S) -> None:
        """Met the limit: remember the pace that met it, and go `factor` times what was actually sent (not
        below `floor`)."""
        self._last_cut = now
        sending = self._sending(now)
        self._limit_rate = max(sending, floor)
        self._set_rate(max(sending * factor, floor), now)
        self._level = min(self._level, 0.0)  # and no burst: Graph's bucket has none left to give

    def _set_rate(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate = min(CEILING_RU_PER_S, max(FLOOR_RU_PER_S, rate))
        self._level = min(self._level, self.capacity)
        self._reset_interval(now)

    def _reset_interval(self, now: float) -> None:
        elapsed = now - self._last_adjust
        if elapsed >= INTERVAL_S / 2:
            self._last_sending = self._spent_since_adjust / elapsed
        self._spent_since_adjust = 0.0
        self._last_adjust = now
        self._held_back = False
        self._reference_percentage = self._last_percentage


class CallPace(SharedPace):
    """A pace in calls per second for reads under a per-tenant call limit Graph does not publish (the
    authentication-method reads: a few a second in public reports), learned from what Graph accepted.

    A limit in calls refuses the part of a `$batch` beyond its burst whatever the average pace, so halving on
    each 429 would only drive the pace to nothing. Instead, the first refusal sets the pace to the rate Graph
    actually accepted over the last `WINDOW_S` seconds (at least a second of it), and each later burst of
    refusals eases it by `EASE`; the burst is a second of the pace (the batch size, at most `MAX_BURST`), and
    everyone waits out the `Retry-After`. Until the
    first refusal the pace grows by `SLOW_START_GROWTH` a second while spenders wait on it, and after it by
    `PROBE_GROWTH` every `PROBE_EVERY_S`, so a limit that rises is found again without a refusal each time.
    """

    START_PER_S = 20.0
    FLOOR_PER_S = 0.5
    CEILING_PER_S = 200.0
    MAX_BURST = 20  # Graph's $batch maximum
    WINDOW_S = 5.0
    SLOW_START_GROWTH = 1.5
    PROBE_GROWTH = 1.05
    PROBE_EVERY_S = 5.0
    EASE = 0.9

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self.refused = 0   # calls Graph refused (429)
        self.accepted = 0  # calls Graph answered
        self.waited_seconds = 0.0
        self._init_peers()
        self.reset()

    def reset(self) -> None:
        """Forget what was learned (a fresh process; benchmarks)."""
        now = time.monotonic()
        self.rate = self.START_PER_S
        self.slow_start = True
        self._level = float(self.burst)
        self._stamp = now
        self._paused_until = 0.0
        self._cut_at = float("-inf")  # when the pace was last cut: refusals of batches sent before are stale
        self._last_growth = now
        self._held_back = False
        self._recent: deque[tuple[float, int]] = deque()

    @property
    def burst(self) -> int:
        """How many calls may go at once: a second of the pace, between 1 and `MAX_BURST`."""
        return max(1, min(self.MAX_BURST, int(self.rate)))

    async def take(self, wanted: int) -> int:
        """Wait until the pace allows a batch (and no `Retry-After` is in force), and take it: `wanted` calls or
        the burst at that moment, whichever is fewer. The size is decided when the wait ends, not before: a
        spender that queued while the pace was faster must not send the bigger batch it asked for then."""
        await self._hear_peers()
        async with self._lock:
            while True:
                now = time.monotonic()
                self._level = min(float(self.burst), self._level + (now - self._stamp) * self.rate)
                self._stamp = now
                need = max(1, min(wanted, self.burst))
                wait = max(self._paused_until - now, (need - self._level) / self.rate if self._level < need else 0.0)
                if wait <= 1e-9:
                    self._level -= need
                    return need
                self._held_back = True
                self.waited_seconds += wait
                await asyncio.sleep(wait)

    def answered(self, accepted: int, refused: int, retry_after: float = 1.0, *, sent_at: float | None = None) -> None:
        """A `$batch` sent at `sent_at` (monotonic; default now) came back: `accepted` calls answered, `refused`
        answered 429 with `retry_after`. Refusals of a batch sent before the last cut answer the pace already
        cut for: they are counted, and neither cut again nor lengthen the pause (with many batches in flight,
        each late refusal pushing the pause on would hold the tenant's reads nearly all the time)."""
        now = time.monotonic()
        stale = sent_at is not None and sent_at < self._cut_at
        self.accepted += accepted
        self.refused += refused
        if accepted:
            self._recent.append((now, accepted))
        while self._recent and self._recent[0][0] < now - self.WINDOW_S:
            self._recent.popleft()
        if refused and stale:
            pass
        elif refused:
            span = max(1.0, now - self._recent[0][0]) if self._recent else self.WINDOW_S
            taken = sum(n for _, n in self._recent) / span
            # The first refusal ends the slow start at what Graph took; later ones come at about the limit (the
            # pace probes up to it), so each eases the pace by EASE, never faster than what Graph took.
            learned = taken if self.slow_start else self.rate * self.EASE
            self.rate = max(self.FLOOR_PER_S, min(self.rate, learned))  # a refusal never speeds the pace up
            self.slow_start = False
            self.cuts += 1
            self._paused_until = max(self._paused_until, now + retry_after)
            self._cut_at = now
            self._level = min(self._level, 0.0)
            self._last_growth = now
            self._held_back = False
        elif now - self._last_growth >= (1.0 if self.slow_start else self.PROBE_EVERY_S):
            if self._held_back:  # only a pace that held somebody back is known to be too slow
                growth = self.SLOW_START_GROWTH if self.slow_start else self.PROBE_GROWTH
                self.rate = min(self.CEILING_PER_S, self.rate * growth)
            self._last_growth = now
            self._held_back = False

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def hold(self, until: float) -> None:
        """Another instance met the limit: nobody here sends until `until` (monotonic) either, and refusals of
        our batches already in flight answer the same burst (stale: counted, no cut)."""
        now = time.monotonic()
        self._paused_until = max(self._paused_until, until)
        self._cut_at = max(self._cut_at, now)
        self._level = min(self._level, 0.0)

    def follow_cut(self) -> None:
        """Another instance cut the tenant's pace: ease ours as a later burst would (half at the end of a slow
        start), unless our own cut answered the same burst."""
        now = time.monotonic()
        if now - self._cut_at < FOLLOW_WINDOW_S:
            return
        self.rate = max(self.FLOOR_PER_S, self.rate * (0.5 if self.slow_start else self.EASE))
        self.slow_start = False
        self._cut_at = self._last_growth = now
        self._level = min(self._level, 0.0)

    def join(self, rate: float) -> None:
        """Start at our share of the pace the other instances learned."""
        self.rate = max(self.FLOOR_PER_S, min(self.CEILING_PER_S, rate))
        self.slow_start = False
        self._level = min(self._level, float(self.burst))


class FixedPace:
    """A limit Graph publishes in calls per window (the reports limit: 5 requests per 10 s per app and tenant),
    kept by a bucket refilled at that rate, so the first calls go at once and the rest at the limit. The bucket
    holds one call fewer than Graph's: a call reaches Graph a little after it took its turn here, so a bucket as
    big as Graph's would run ahead of it by that delay and meet a 429 once it is spent. A 429's `Retry-After`
    (`pause`) holds every caller and empties the bucket. Nothing to learn: the limit is Graph's word, so this
    pace never changes its rate and shares nothing with the other instances (their calls only bring an
    occasional 429, whose `Retry-After` is honoured)."""

    def __init__(self, calls: int, window_s: float) -> None:
        self.capacity = float(max(1, calls - 1))
        self.rate = calls / window_s
        self.waited_seconds = 0.0
        self._lock = asyncio.Lock()
        self._level = self.capacity
        self._stamp = time.monotonic()
        self._paused_until = 0.0

    async def take(self) -> None:
        """Wait for a call's turn (and for any `Retry-After` in force), and take it."""
        async with self._lock:
            while True:
                now = time.monotonic()
                self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
                self._stamp = now
                wait = max(self._paused_until - now, (1.0 - self._level) / self.rate)
                if wait <= 1e-9:
                    self._level -= 1.0
                    return
                self.waited_seconds += wait
                await asyncio.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Graph refused a call for `seconds`: nobody calls before they have passed, and the bucket starts empty."""
        now = time.monotonic()
        self._paused_until = max(self._paused_until, now + seconds)
        self._level = min(self._level, 0.0)
