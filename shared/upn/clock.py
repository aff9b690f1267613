"""The UPN side's clock and timestamp format: the current UTC time, read in one place, and ISO 8601
UTC with `Z`, as queue messages, checkpoints and flags write it."""
from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    """`value` as ISO 8601 UTC ending in `Z`."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
