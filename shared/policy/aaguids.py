"""AAGUIDs: the identifiers of passkey providers, how we normalise them and the names we show beside them.

Names come from `shared/data/aaguid-names.json` (a community list, names only) plus the administrator's
own `aaguidNames` in the desired-state document. They are for people reading plans and reports, never a
security decision: an unknown AAGUID is shown bare.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

from shared.ids import is_guid

#: Microsoft Authenticator on Android (from the seed procedure).
AUTHENTICATOR_ANDROID = "de1e552d-db1d-4423-a619-566b625cdc84"
#: Microsoft Authenticator on iOS (from the seed procedure).
AUTHENTICATOR_IOS = "90a3ccdf-635c-4729-a248-9b709135078f"
#: Both Authenticator AAGUIDs, Android first (the seed lists them in this order).
AUTHENTICATOR_AAGUIDS: tuple[str, str] = (AUTHENTICATOR_ANDROID, AUTHENTICATOR_IOS)

_NAMES_FILE = Path(__file__).resolve().parent.parent / "data" / "aaguid-names.json"


def normalise_aaguid(value: str) -> str:
    """The comparison key of an AAGUID: lowercase. Non-GUID strings are returned unchanged.

    Graph compares AAGUIDs case-insensitively, and the policy may hold entries typed by hand in any case;
    lowercasing gives one key per authenticator without touching strings we do not understand.
    """
    return value.lower() if is_guid(value) else value


def aaguid_key(value: str) -> str:
    """The key used to decide whether two list entries are the same authenticator (case-insensitive)."""
    return value.lower()


def dedupe_aaguids(values: Iterable[str]) -> list[str]:
    """Normalise and de-duplicate, keeping the first occurrence's position."""
    seen: set[str] = set()
    out: list[str] = []
    for value in values:
        key = aaguid_key(value)
        if key not in seen:
            seen.add(key)
            out.append(normalise_aaguid(value))
    return out


@cache
def known_names() -> Mapping[str, str]:
    """The shipped AAGUID → name list (read once from the app's own data folder)."""
    with _NAMES_FILE.open(encoding="utf-8") as fh:
        data = json.load(fh)
    return {str(k).lower(): str(v) for k, v in data.items()}


def name_of(aaguid: str, extra_names: Mapping[str, str] | None = None) -> str:
    """The display name of `aaguid`: the document's own names first, then the shipped list, else the GUID.

    Falling back to the bare GUID keeps every rendering complete for hardware keys nobody has named.
    """
    key = aaguid.lower()
    if extra_names:
        for k, v in extra_names.items():
            if k.lower() == key:
                return v
    return known_names().get(key, aaguid)


def label_of(aaguid: str, extra_names: Mapping[str, str] | None = None) -> str:
    """`guid (Name)` when a name is known, else the bare GUID: what plans and reports print."""
    name = name_of(aaguid, extra_names)
    return aaguid if name == aaguid else f"{aaguid} ({name})"
