"""AAGUIDs: one comparison key per authenticator whatever the case, de-duplication that keeps the first entry's
place, and display names from the document first, then the shipped list (shared/data/aaguid-names.json), else
the bare GUID."""
from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from shared.ids import is_guid
from shared.policy.aaguids import (
    AUTHENTICATOR_AAGUIDS,
    aaguid_key,
    dedupe_aaguids,
    known_names,
    label_of,
    name_of,
    normalise_aaguid,
)
from tests.policy.policy_factories import ANDROID, IOS, YUBIKEY

WINDOWS_HELLO = "08987058-cadc-4b81-b6e1-30de50dcbe96"
GOOGLE_PASSWORD_MANAGER = "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"

guids = st.uuids().map(str).flatmap(lambda g: st.sampled_from([g, g.upper()]))
entries = st.lists(st.one_of(guids, st.sampled_from([YUBIKEY, YUBIKEY.upper(), ANDROID.upper(), "not-a-guid"])))


def test_a_guid_is_compared_in_lowercase_and_anything_else_is_left_alone() -> None:
    """A GUID typed in any case normalises to lowercase; a string that is no GUID comes back as it was."""
    assert normalise_aaguid(YUBIKEY.upper()) == YUBIKEY
    assert normalise_aaguid("Not-A-GUID") == "Not-A-GUID"
    assert aaguid_key(YUBIKEY.upper()) == aaguid_key(YUBIKEY)


def test_dedupe_keeps_the_first_place_of_each_authenticator() -> None:
    """The same authenticator in another case is a duplicate; the survivor is normalised and stays where the
    first one was."""
    assert dedupe_aaguids([IOS.upper(), YUBIKEY, IOS, ANDROID, YUBIKEY.upper()]) == [IOS, YUBIKEY, ANDROID]


@given(entries)
def test_dedupe_is_a_normalised_set_in_first_seen_order(values: list[str]) -> None:
    """Every entry's key survives exactly once, in first-seen order, and de-duplicating again changes nothing."""
    out = dedupe_aaguids(values)
    first_seen = list(dict.fromkeys(aaguid_key(v) for v in values))
    assert [aaguid_key(v) for v in out] == first_seen
    assert all(v == v.lower() for v in out if is_guid(v))
    assert dedupe_aaguids(out) == out


def test_the_shipped_list_names_the_common_passkey_providers() -> None:
    """The data file's 54 names load by lowercase GUID, the two Authenticator AAGUIDs of the seed among them."""
    names = known_names()
    assert len(names) == 54 and all(is_guid(k) and k == k.lower() and v for k, v in names.items())
    assert [names[a] for a in AUTHENTICATOR_AAGUIDS] == ["Microsoft Authenticator (Android)",
                                                         "Microsoft Authenticator (iOS)"]
    assert names[WINDOWS_HELLO] == "Windows Hello" and names[GOOGLE_PASSWORD_MANAGER] == "Google Password Manager"
    assert YUBIKEY not in names  # hardware keys are for the administrator to name


def test_names_fall_back_to_the_guid() -> None:
    """name_of prefers the document's names, then the shipped list, else the bare GUID."""
    assert name_of(IOS) == "Microsoft Authenticator (iOS)"
    assert name_of(YUBIKEY) == YUBIKEY
    assert name_of(YUBIKEY.upper(), {YUBIKEY: "YubiKey 5"}) == "YubiKey 5"
    assert name_of(IOS, {IOS: "Our iPhones"}) == "Our iPhones"
    assert label_of(YUBIKEY) == YUBIKEY
    assert label_of(ANDROID) == f"{ANDROID} (Microsoft Authenticator (Android))"


def test_the_documents_names_match_in_any_case() -> None:
    """A name the administrator keyed in capitals still names the lowercase AAGUID, and the shipped list is
    looked up whatever the case the GUID comes in; an unnamed GUID is printed as it came."""
    assert name_of(YUBIKEY, {YUBIKEY.upper(): "YubiKey 5"}) == "YubiKey 5"
    assert name_of(WINDOWS_HELLO.upper()) == "Windows Hello"
    unnamed = str(uuid.UUID(int=7)).upper()
    assert name_of(unnamed) == unnamed and label_of(unnamed, {}) == unnamed
    assert label_of(YUBIKEY, {YUBIKEY: "YubiKey 5"}) == f"{YUBIKEY} (YubiKey 5)"
