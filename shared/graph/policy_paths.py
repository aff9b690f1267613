"""Where the tenant's policy objects live in Microsoft Graph: each path written once, and the request
(method and path) a planned write becomes.

Pure: no I/O and no SDK, so `policy_reads` and `policy_writes` build their requests from it and the plan's
JSON codec can show people where each write goes without the pure core knowing a URL. Paths are relative
to the Graph v1.0 base URL.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIDO2_PATH = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"
STRENGTHS_PATH = "/policies/authenticationStrengthPolicies"
CA_PATH = "/identity/conditionalAccess/policies"


def strength_path(strength_id: str) -> str:
    """One authentication strength policy."""
    return f"{STRENGTHS_PATH}/{strength_id}"


def configurations_path(strength_id: str) -> str:
    """The combination configurations (FIDO2 key restrictions) of one strength."""
    return f"{strength_path(strength_id)}/combinationConfigurations"


def ca_policy_path(policy_id: str) -> str:
    """One Conditional Access policy."""
    return f"{CA_PATH}/{policy_id}"


def write_request(write: Mapping[str, Any]) -> tuple[str, str]:
    """(HTTP method, path) of a planned write, from what it does (`op`) and the ids it names
    (`strengthId`, `configurationId`, `policyId`); a ValueError for an op nobody plans."""
    sid, cid, pid = (str(write.get(key, "")) for key in ("strengthId", "configurationId", "policyId"))
    requests = {
        "patch_fido2": ("PATCH", FIDO2_PATH),
        "create_strength": ("POST", STRENGTHS_PATH),
        "update_strength": ("PATCH", strength_path(sid)),
        "delete_strength": ("DELETE", strength_path(sid)),
        "update_strength_combinations": ("POST", f"{strength_path(sid)}/updateAllowedCombinations"),
        "create_combination_configuration": ("POST", configurations_path(sid)),
        "update_combination_configuration": ("PATCH", f"{configurations_path(sid)}/{cid}"),
        "delete_combination_configuration": ("DELETE", f"{configurations_path(sid)}/{cid}"),
        "create_ca_policy": ("POST", CA_PATH),
        "update_ca_policy": ("PATCH", ca_policy_path(pid)),
        "delete_ca_policy": ("DELETE", ca_policy_path(pid)),
    }
    op = write.get("op")
    if op not in requests:
        raise ValueError(f"unknown planned write {op!r}")
    return requests[str(op)]
