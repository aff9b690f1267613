"""The slow lane: the changed users whose passkeys the processor did not read itself, read at the pace Graph
allows for authentication methods, then each one's case decided.

    `passkeys` message (<= 20 changed users) --> one $batch of fido2Methods (the tenant's call pace)
        holder (the report listed them; their flag is open, details pending) --> complete_details
        anyone else --> decide_change with the passkeys registered before the change --> merge_flag

Authentication-method reads can be the slowest thing Graph does (a few a second per tenant), so the
processor flags the users the registration report lists as passkey holders at once and leaves the reads to
this lane: their flags say `passkeyDetails: pending` until it has read them. Users the report does not list
(it is refreshed only now and then, so a passkey registered since is missing) are read here too, and
flagged here when they hold one: nobody is missed, only later.

Each step is idempotent: a second delivery finds the details complete or the same change already merged,
and writes nothing.

How far the slow lane has got is counted per run (the sweep's, whose id its messages carry): each instance adds
the users it read to its own properties of the run's `dt|` row after every message, and `shared.policy.runs`
shows the sum against the sweep's changed users, with an ETA.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from typing import Any

from shared.errors import ConcurrencyError, InputError, PasskeyGuardError
from shared.graph.passkeys import read_passkeys
from shared.services import Services
from shared.upn.clock import now as _now
from shared.upn.decide import complete_details, decide_change, parse_aware_time, registered_after
from shared.upn.flag import Flag
from shared.upn.processor import save_flag

log = logging.getLogger(__name__)

#: This process among the app's instances, in the runs' `dt|` rows.
INSTANCE = uuid.uuid4().hex[:12]
#: Users this instance read per (tenant, run): [count, first read, last read], for the latest runs only.
_tallies: dict[tuple[str, str], list[Any]] = {}
_KEEP_TALLIES = 64


async def _count_reads(services: Services, run_id: str | None, users: int, at: datetime) -> None:
    """Add this message's reads to the run's count (a failure is logged: the count is for people)."""
    if not run_id:
        return
    tally = _tallies.setdefault((services.store.tenant_id, run_id), [0, at, at])
    while len(_tallies) > _KEEP_TALLIES:  # a long-lived instance sees a sweep every few minutes
        del _tallies[next(iter(_tallies))]
    tally[0] += users
    tally[2] = at
    try:
        await services.store.runs.count_details(run_id, INSTANCE, tally[0], tally[1], tally[2])
    except PasskeyGuardError as exc:
        log.warning("the passkey reads of run %s were not counted (%s)", run_id, exc.code)


async def _complete(services: Services, user_id: str, passkeys: list[dict[str, Any]], at: datetime) -> Flag | None:
    """Fill in a holder's pending flag with the passkeys read (ETag update); None when it needs nothing."""
    for _ in range(5):
        stored = await services.store.flags.get(user_id)
        if stored is None or not stored.flag.details_pending:
            return None
        done = complete_details(stored.flag, passkeys, at=at)
        try:
            await services.store.flags.update(done, stored.etag, created_at=stored.created_at)
            return done
        except ConcurrencyError:
            continue
    raise ConcurrencyError(f"flag of user {user_id} kept changing under us")


def _before_change(passkeys: list[dict[str, Any]], detected: datetime) -> list[dict[str, Any]]:
    """The passkeys that may have been registered under the old UPN: all but those surely registered after the
    detection (`registered_after`, `complete_details`'s rule), for a case the report did not open."""
    return [p for p in passkeys if not registered_after(p.get("createdDateTime"), detected)]


def _when(value: str | None, what: str) -> datetime | None:
    if value is None:
        return None
    parsed = parse_aware_time(value)
    if parsed is None:
        raise InputError(f"queue message {what}: not an ISO 8601 time with a zone")
    return parsed


async def _decide(services: Services, entry: Any, passkeys: list[dict[str, Any]], *, source: str,
                  ticket_id: str | None, at: datetime) -> tuple[str, Flag | None]:
    """One user's case from their passkeys: (what happened, the flag written or None)."""
    uid = entry.id.lower()
    if entry.holder:
        done = await _complete(services, uid, passkeys, at)
        if done is not None:
            return "completed", done
        # no pending flag (a second delivery, or the case closed meanwhile): decide as for anyone else
    detected = _when(entry.detectedAt, "detectedAt")
    assert detected is not None
    decision = decide_change(uid, entry.upn, entry.oldUpn, _before_change(passkeys, detected),
                             source=source, detected_at=detected, ticket_id=ticket_id,
                             old_upn_seen_at=_when(entry.oldUpnSeenAt, "oldUpnSeenAt"),
                             old_upn_origin=entry.oldUpnOrigin or "snapshot")
    if decision.flag is None:
        return "no_passkey", None
    written = await save_flag(services, decision.flag)
    return ("flagged" if written else "unchanged"), written


async def read_and_decide(services: Services, message: Any) -> dict[str, Any]:
    """Read the message's users' passkeys (one `$batch`, at the tenant's authentication-method pace) and
    settle each one's case; returns the ids by outcome and those flagged."""
    entries = {e.id.lower(): e for e in message.users}
    passkeys = await read_passkeys(services.graph, list(entries))
    at = _now()
    decided = await asyncio.gather(*(_decide(services, entry, passkeys.get(uid, []), source=message.source,
                                             ticket_id=message.ticketId, at=at) for uid, entry in entries.items()))
    outcome: dict[str, list[str]] = {}
    flagged: list[str] = []
    for uid, (kind, flag) in zip(entries, decided, strict=True):
        outcome.setdefault(kind, []).append(uid)
        if kind == "flagged" and flag is not None:
            flagged.append(uid)
    await _count_reads(services, message.runId, len(entries), _now())
    return {"read": len(entries), "flagged": flagged, "decisions": outcome}
