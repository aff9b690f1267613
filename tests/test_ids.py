"""The one GUID shape: what `is_guid` accepts and refuses, and that the anchored pattern agrees with it."""
from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.ids import GUID, GUID_PATTERN, is_guid


@pytest.mark.parametrize("value", ["00000000-0000-4000-8000-000000000001", "DE1E552D-DB1D-4423-A619-566B625CDC84",
                                   "de1e552d-DB1D-4423-a619-566b625cdc84"])
def test_a_guid_in_any_case_is_a_guid(value):
    """The 8-4-4-4-12 hex form counts whatever the case of its letters."""
    assert is_guid(value)


@pytest.mark.parametrize("value", ["", "de1e552d-db1d-4423-a619-566b625cdc8", "de1e552ddb1d4423a619566b625cdc84",
                                   "{de1e552d-db1d-4423-a619-566b625cdc84}", " de1e552d-db1d-4423-a619-566b625cdc84",
                                   "de1e552d-db1d-4423-a619-566b625cdc84\n", "ge1e552d-db1d-4423-a619-566b625cdc84",
                                   None, 12, ["de1e552d-db1d-4423-a619-566b625cdc84"]])
def test_anything_else_is_not(value):
    """Braces, missing dashes, surrounding whitespace, a non-hex digit or a non-string are refused."""
    assert not is_guid(value)


@given(st.text(alphabet="0123456789abcdefABCDEFg-{} \n", max_size=40))
def test_the_anchored_pattern_agrees_with_is_guid(text):
    """GUID_PATTERN (for JSON Schema) accepts exactly what is_guid does (fullmatch: no newline slips past `$`)."""
    assert (re.fullmatch(GUID_PATTERN, text) is not None) is is_guid(text)
    assert (GUID.fullmatch(text) is not None) is is_guid(text)
