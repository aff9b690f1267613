"""Keys for Table Storage: safe row/partition keys, bucketing, inverted timestamps, opaque page tokens.

Azure refuses `/ \\ # ?` and control characters in PartitionKey and RowKey (Azurite answers a `/` with
HTTP 500 and a `#` with a generic error), so every id goes through `safe_key()` exactly once before it
becomes (part of) a key. The encoding is reversible (so two ids never share a key) and its output is printable ASCII
only: then Python's string order equals the service's key order, which the cross-bucket merge relies on
(the order of encoded keys can differ from that of the raw ids when they contain escaped characters).
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import zlib
from typing import Any

from shared.errors import InputError

#: Characters always escaped, each UTF-8 byte as `~XX` (upper-case hex): the four Azure forbids, our escape
#: `~`, our composite-key separator `|`, and `% ' "` (URL and filter quoting trouble). Controls and
#: non-ASCII are escaped too.
_ESCAPED = frozenset("/\\#?~|%'\"")
#: Azure allows 1 KiB per key (UTF-16: 512 characters); 400 leaves room for composite keys.
MAX_KEY_LENGTH = 400
#: Separator inside composite keys (`tenant|b07`); `safe_key` never emits it, so parts never collide.
SEPARATOR = "|"

#: Printable ASCII without the escaped characters: such ids are their own key.
_PLAIN = re.compile("[^" + re.escape("".join(sorted(_ESCAPED))) + r"\x00-\x1f\x7f-\U0010ffff]+")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_INVERTED_BASE = 10**17 - 1  # microseconds since 1970; 17 digits last until the year 5138
_INVERTED_WIDTH = 17


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if ch in _ESCAPED or code < 0x20 or code >= 0x7F:
        return "".join(f"~{b:02X}" for b in ch.encode("utf-8"))
    return ch


def safe_key(value: str, *, what: str = "key") -> str:
    """Encode an id for use in a PartitionKey or RowKey (reversible, injective, printable ASCII only).

    Empty, non-string, unencodable (lone surrogates) and over-long values raise InputError naming `what`.
    """
    if not isinstance(value, str) or not value:
        raise InputError(f"{what} must be a non-empty string")
    if _PLAIN.fullmatch(value):  # the common case (GUIDs, names): nothing to escape
        if len(value) > MAX_KEY_LENGTH:
            raise InputError(f"{what} is too long for a storage key ({len(value)} characters)")
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{what} is not valid Unicode text") from None
    encoded = "".join(_escape_char(ch) for ch in value)
    if len(encoded) > MAX_KEY_LENGTH:
        raise InputError(f"{what} is too long for a storage key ({len(value)} characters)")
    return encoded


def bucket_of(user_id: str, buckets: int) -> int:
    """A stable bucket for `user_id` (CRC-32 of its UTF-8 bytes): the same in every process and run."""
    return zlib.crc32(user_id.encode("utf-8")) % buckets


def bucket_partition(tenant_id: str, bucket: int) -> str:
    """The PartitionKey of one bucket of a tenant: `<tenant>|bNN`."""
    return f"{safe_key(tenant_id, what='tenant id')}{SEPARATOR}b{bucket:02d}"


def inverted_time(when: dt.datetime) -> str:
    """A fixed-width decimal that sorts newest first (RowKeys sort ascending)."""
    if when.tzinfo is None:
        raise InputError("timestamps must be timezone-aware")
    micros = (when - _EPOCH) // dt.timedelta(microseconds=1)
    return f"{_INVERTED_BASE - micros:0{_INVERTED_WIDTH}d}"


def encode_page_token(kind: str, state: dict[str, Any]) -> str:
    """An opaque page token: base64url of a small JSON object tagged with the listing it belongs to."""
    payload = json.dumps({"k": kind, **state}, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(payload).decode("ascii").rstrip("=")


def decode_page_token(kind: str, token: str) -> dict[str, Any]:
    """The state inside a page token from `encode_page_token(kind, …)`; InputError when it is not one."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        json.dumps(data, ensure_ascii=False).encode("utf-8")  # lone surrogates cannot go into a query
    except (ValueError, binascii.Error, UnicodeError, RecursionError):
        raise InputError("page token is malformed") from None
    if not isinstance(data, dict) or data.pop("k", None) != kind:
        raise InputError("page token is malformed or belongs to another listing")
    return data
