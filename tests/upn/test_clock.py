"""The UPN side's clock: aware UTC times, written as ISO 8601 with `Z` whatever zone they came in."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from shared.upn.clock import iso, now


def test_now_is_aware_utc() -> None:
    """`now()` carries its zone, UTC, so comparisons with stored times never mix naive and aware."""
    assert now().tzinfo is UTC


def test_iso_writes_utc_with_z_from_any_zone() -> None:
    """A time in another zone is converted to UTC and ends in `Z`, not `+00:00`."""
    at = datetime(2026, 1, 1, 13, 30, tzinfo=timezone(timedelta(hours=1)))
    assert iso(at) == "2026-01-01T12:30:00Z"
