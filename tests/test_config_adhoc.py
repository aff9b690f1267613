"""ALLOW_ADHOC_DOCUMENTS: off unless set to true; anything else is an error naming it."""
from __future__ import annotations

import pytest

from shared.config import Settings
from shared.errors import ConfigError

BASE = {"TENANT_ID": "11111111-2222-4333-8444-555555555555", "STATE_STORAGE": "UseDevelopmentStorage=true"}


def test_adhoc_documents_are_off_by_default_and_on_only_when_set():
    """Without the setting HTTP plans only from POLICY_FILE; `true` allows request documents."""
    assert Settings.from_env(BASE).allow_adhoc_documents is False
    assert Settings.from_env({**BASE, "ALLOW_ADHOC_DOCUMENTS": "true"}).allow_adhoc_documents is True


def test_a_malformed_adhoc_setting_names_it():
    """A value that is not true/false is a ConfigError naming ALLOW_ADHOC_DOCUMENTS."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, "ALLOW_ADHOC_DOCUMENTS": "sometimes"})
    assert "ALLOW_ADHOC_DOCUMENTS" in str(info.value)
