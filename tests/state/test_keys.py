"""Unit tests for storage keys: safe_key encoding, bucketing, inverted time, page tokens (no Azurite)."""
from __future__ import annotations

import datetime as dt
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import InputError
from shared.state.keys import (
    MAX_KEY_LENGTH,
    bucket_of,
    bucket_partition,
    decode_page_token,
    encode_page_token,
    inverted_time,
    safe_key,
)

_ESCAPED_BYTE = re.compile(r"~([0-9A-F]{2})")
FORBIDDEN = set("/\\#?") | {chr(c) for c in range(0x20)} | {chr(c) for c in range(0x7F, 0xA0)}
text_ids = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


def decode_key(encoded: str) -> str:
    """The inverse of safe_key (`~XX` is one UTF-8 byte): that one exists proves no two ids share a key."""
    raw = bytearray()
    pos = 0
    for match in _ESCAPED_BYTE.finditer(encoded):
        raw += encoded[pos:match.start()].encode("ascii")
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += encoded[pos:].encode("ascii")
    return raw.decode("utf-8")


@pytest.mark.parametrize("raw", ["a/b", "c\\d", "e#f", "g?h", "tab\tx", "nl\nx", "del\x7fx", "~tilde", "p|ipe",
                                 "quo'te", "pct%20", "ünïcødé", "emoji😀"])
def test_safe_key_encodes_forbidden_characters_reversibly(raw: str) -> None:
    """Every character Azure forbids is escaped, the output is printable ASCII, and decoding restores it."""
    encoded = safe_key(raw)
    assert not FORBIDDEN & set(encoded)
    assert all(ch in string.printable and ch not in "\t\n\r\x0b\x0c" for ch in encoded)
    assert "|" not in encoded
    assert decode_key(encoded) == raw


def test_safe_key_leaves_plain_ids_alone() -> None:
    """GUIDs and ordinary UPN-like ids are stored readably, unchanged."""
    assert safe_key("0f8fad5b-d9cb-469f-a165-70867728950e") == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert safe_key("alice@contoso.com") == "alice@contoso.com"


@pytest.mark.parametrize("bad", ["", None, 42, "x" * (MAX_KEY_LENGTH + 1), "lone\ud800surrogate"])
def test_safe_key_rejects_unusable_ids(bad: object) -> None:
    """Empty, non-string, over-long and non-Unicode ids raise InputError instead of reaching the service."""
    with pytest.raises(InputError):
        safe_key(bad)  # type: ignore[arg-type]


@given(text_ids)
def test_safe_key_round_trips_any_text(raw: str) -> None:
    """decode_key(safe_key(x)) == x and no forbidden character survives, for arbitrary text."""
    encoded = safe_key(raw)
    assert decode_key(encoded) == raw
    assert not FORBIDDEN & set(encoded)


@given(text_ids, text_ids)
def test_safe_key_output_is_ascii_and_injective(a: str, b: str) -> None:
    """Encoded keys are pure ASCII (Python and the service then sort them alike) and distinct ids stay distinct."""
    assert all(ord(ch) < 0x7F for ch in safe_key(a))
    assert (safe_key(a) == safe_key(b)) == (a == b)


def test_buckets_are_stable_and_spread() -> None:
    """A user always lands in the same bucket, and 2,000 ids use every one of 16 buckets."""
    ids = [f"user-{i}" for i in range(2000)]
    first = [bucket_of(u, 16) for u in ids]
    assert first == [bucket_of(u, 16) for u in ids]
    assert set(first) == set(range(16))
    assert bucket_partition("t", 7).endswith("|b07")


def test_inverted_time_sorts_newest_first() -> None:
    """A later timestamp gives a smaller fixed-width key; naive datetimes are refused."""
    now = dt.datetime.now(dt.UTC)
    keys = [inverted_time(now + dt.timedelta(microseconds=n)) for n in (0, 1, 10**6, 10**12)]
    assert keys == sorted(keys, reverse=True)
    assert len({len(k) for k in keys}) == 1
    with pytest.raises(InputError):
        inverted_time(dt.datetime(2025, 1, 1))


def test_page_tokens_round_trip_and_reject_tampering() -> None:
    """A token decodes to its state only for its own listing; garbage raises InputError."""
    token = encode_page_token("flags", {"after": "u1", "status": "open"})
    assert decode_page_token("flags", token) == {"after": "u1", "status": "open"}
    with pytest.raises(InputError):
        decode_page_token("runs", token)
    for bad in ("!!!", "bm90IGpzb24", token[:-3]):
        with pytest.raises(InputError):
            decode_page_token("flags", bad)
