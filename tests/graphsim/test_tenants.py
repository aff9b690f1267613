"""The bundled demo tenants load and serve what `make demo` expects."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from graphsim.launcher import Simulator, start_simulator
from graphsim.tenant import load_tenant
from tests.graphsim.conftest import ANDROID, FEITIAN, IOS, YUBI, raw

TENANTS = Path(__file__).resolve().parents[2] / "graphsim" / "tenants"
FIDO2 = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """The demo tenant, started from its file path."""
    with start_simulator(TENANTS / "demo.json") as running:
        yield running


def test_demo_users_groups_and_passkeys(sim: Simulator) -> None:
    """About 40 GUID-id users on contoso.example, about half with passkeys of the named makers."""
    users = sim.state()["users"]
    assert 35 <= len(users) <= 45
    assert all(u["userPrincipalName"].endswith("@contoso.example") for u in users)
    keys = [m["aaGuid"] for u in users for m in u["authentication"]["fido2Methods"]]
    holders = sum(1 for u in users if u["authentication"]["fido2Methods"])
    assert 0.4 <= holders / len(users) <= 0.6
    assert {YUBI, ANDROID, IOS, FEITIAN} <= set(keys)
    assert sum(1 for u in users for m in u["authentication"]["fido2Methods"] if m["aaGuid"] == FEITIAN) == 1


def test_demo_groups(sim: Simulator) -> None:
    """Passkey Pilot and Break Glass are security groups; Marketing is a Microsoft 365 group."""
    groups = {g["displayName"]: g for g in raw(sim, "GET", "/groups").body["value"]}
    assert groups["Passkey Pilot"]["securityEnabled"] is True and groups["Passkey Pilot"]["groupTypes"] == []
    assert groups["Break Glass"]["securityEnabled"] is True
    assert groups["Marketing"]["groupTypes"] == ["Unified"] and groups["Marketing"]["mailEnabled"] is True
    assert groups["Marketing"]["securityEnabled"] is False


def test_demo_fido2_is_legacy_shape(sim: Simulator) -> None:
    """The demo's FIDO2 configuration has no profiles: enforced allow-list of YubiKey 5 and Feitian."""
    cfg = raw(sim, "GET", FIDO2).body
    assert "passkeyProfiles" not in cfg and cfg["state"] == "enabled" and cfg["isAttestationEnforced"] is True
    assert cfg["keyRestrictions"] == {"isEnforced": True, "enforcementType": "allow", "aaGuids": [YUBI, FEITIAN]}
    assert cfg["includeTargets"][0]["id"] == "all_users"


def test_demo_strengths_and_no_ca(sim: Simulator) -> None:
    """Three built-ins with their combinations, one custom strength with "password,sms", no CA policies."""
    pols = raw(sim, "GET", "/policies/authenticationStrengthPolicies").body["value"]
    builtin = {p["id"][-1]: p for p in pols if p["policyType"] == "builtIn"}
    assert set(builtin) == {"2", "3", "4"}
    assert builtin["4"]["allowedCombinations"] == ["windowsHelloForBusiness", "fido2", "x509CertificateMultiFactor"]
    custom = [p for p in pols if p["policyType"] == "custom"]
    assert len(custom) == 1 and "password,sms" in custom[0]["allowedCombinations"]
    sim.configure(ca_requests_per_second=1000.0)
    assert raw(sim, "GET", "/identity/conditionalAccess/policies").body["value"] == []


def test_profiles_tenant_has_the_default_profile() -> None:
    """profiles.json: same users, a default passkey profile referenced by the all_users target, legacy mirror."""
    demo = json.loads((TENANTS / "demo.json").read_text())
    prof = json.loads((TENANTS / "profiles.json").read_text())
    assert [u["id"] for u in prof["users"]] == [u["id"] for u in demo["users"]]
    cfg = load_tenant(prof).fido2_config
    (profile,) = cfg["passkeyProfiles"]
    assert profile["id"] == cfg["defaultPasskeyProfile"] == "00000000-0000-0000-0000-000000000001"
    assert profile["passkeyTypes"] == "deviceBound,synced" and profile["attestationEnforcement"] == "registrationOnly"
    assert profile["keyRestrictions"] == {"isEnforced": True, "enforcementType": "allow", "aaGuids": [YUBI]}
    assert cfg["includeTargets"][0]["allowedPasskeyProfiles"] == [profile["id"]]
    assert cfg["keyRestrictions"] == profile["keyRestrictions"]


def test_organization_answers_with_the_tenant_id(sim: Simulator) -> None:
    """GET /organization is a one-item collection whose id is the tenant's, as Graph v1.0 shapes it."""
    tenant_id = json.loads((TENANTS / "demo.json").read_text())["tenantId"]
    full = raw(sim, "GET", "/organization")
    assert full.status == 200
    assert full.body["@odata.context"] == f"{sim.base_url}/$metadata#organization"
    assert [org["id"] for org in full.body["value"]] == [tenant_id]
    assert full.body["value"][0]["verifiedDomains"][0]["name"] == "contoso.example"
    selected = raw(sim, "GET", "/organization?$select=id")
    assert selected.body["value"] == [{"id": tenant_id}]
    assert raw(sim, "GET", "/organization", token=None).status == 401
