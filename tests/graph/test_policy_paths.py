"""Where each planned write goes in Graph: the one definition of the policy objects' paths (pure)."""
from __future__ import annotations

import pytest

from shared.graph.policy_paths import CA_PATH, FIDO2_PATH, STRENGTHS_PATH, write_request
from shared.policy.plan_model import STRENGTH_ID_PLACEHOLDER, WRITE_OPS

ROLLBACK_OPS = ("delete_strength", "delete_combination_configuration", "delete_ca_policy")


@pytest.mark.parametrize(("write", "expected"), [
    ({"op": "patch_fido2"}, ("PATCH", FIDO2_PATH)),
    ({"op": "create_strength"}, ("POST", STRENGTHS_PATH)),
    ({"op": "update_strength", "strengthId": "s1"}, ("PATCH", f"{STRENGTHS_PATH}/s1")),
    ({"op": "delete_strength", "strengthId": "s1"}, ("DELETE", f"{STRENGTHS_PATH}/s1")),
    ({"op": "update_strength_combinations", "strengthId": "s1"},
     ("POST", f"{STRENGTHS_PATH}/s1/updateAllowedCombinations")),
    ({"op": "create_combination_configuration", "strengthId": "s1"},
     ("POST", f"{STRENGTHS_PATH}/s1/combinationConfigurations")),
    ({"op": "update_combination_configuration", "strengthId": "s1", "configurationId": "c1"},
     ("PATCH", f"{STRENGTHS_PATH}/s1/combinationConfigurations/c1")),
    ({"op": "delete_combination_configuration", "strengthId": "s1", "configurationId": "c1"},
     ("DELETE", f"{STRENGTHS_PATH}/s1/combinationConfigurations/c1")),
    ({"op": "create_ca_policy"}, ("POST", CA_PATH)),
    ({"op": "update_ca_policy", "policyId": "p1"}, ("PATCH", f"{CA_PATH}/p1")),
    ({"op": "delete_ca_policy", "policyId": "p1"}, ("DELETE", f"{CA_PATH}/p1")),
])
def test_each_write_becomes_its_request(write, expected):
    """A write's op and ids give the method and path of the one Graph request it becomes."""
    assert write_request(write) == expected


def test_every_op_a_plan_or_rollback_makes_has_a_request():
    """No planned or rollback op lacks a request (a new op must be given one here first)."""
    for op in (*WRITE_OPS, *ROLLBACK_OPS):
        method, path = write_request({"op": op, "strengthId": "s", "configurationId": "c", "policyId": "p"})
        assert method in ("PATCH", "POST", "DELETE") and path.startswith("/")


def test_the_new_strength_placeholder_stays_in_the_path_until_filled():
    """Before create_strength runs, the path shows the placeholder where the new id will go."""
    _, path = write_request({"op": "create_combination_configuration", "strengthId": STRENGTH_ID_PLACEHOLDER})
    assert path == f"{STRENGTHS_PATH}/{STRENGTH_ID_PLACEHOLDER}/combinationConfigurations"


def test_an_unknown_op_is_refused():
    """An op nobody plans is a programming error, never a request."""
    with pytest.raises(ValueError, match="delete_everything"):
        write_request({"op": "delete_everything"})
