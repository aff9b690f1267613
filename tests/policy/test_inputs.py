"""What every policy use case starts from: the desired state (the request's or POLICY_FILE's) and the tenant's."""
from __future__ import annotations

import json

import pytest

from shared.errors import ConfigError, InputError
from shared.policy.inputs import load_desired, read_state


async def test_the_request_document_wins_and_is_validated(use_case_stack):
    """A document given with the request is validated and used; a bad one is an InputError."""
    services, _ = await use_case_stack()
    doc = json.loads(services.settings.policy_file.read_text())
    doc["authenticationStrength"]["displayName"] = "From the request"
    assert load_desired(services, doc).authentication_strength.display_name == "From the request"
    with pytest.raises(InputError):
        load_desired(services, {"passkeyMethod": "nonsense"})


async def test_an_unreadable_policy_file_is_a_config_error_naming_it(use_case_stack, tmp_path):
    """POLICY_FILE naming a missing file is a ConfigError that names the setting and the path."""
    services, _ = await use_case_stack(POLICY_FILE=str(tmp_path / "gone.json"))
    with pytest.raises(ConfigError, match=r"POLICY_FILE names .*gone\.json"):
        load_desired(services)


async def test_the_tenant_state_reads_ca_only_when_the_document_manages_it(use_case_stack):
    """Without a conditionalAccess section no CA policy is listed; the FIDO2 configuration always is."""
    services, sim = await use_case_stack()
    sim.reset_stats()
    state = await read_state(services, load_desired(services))
    assert state.fido2["keyRestrictions"]["isEnforced"] is True and state.ca == []
    assert not any("conditionalAccess" in route for route in sim.stats()["calls"]["by_route"])
    assert set(state.snapshot()) == {"fido2", "strengths", "conditionalAccess"}
