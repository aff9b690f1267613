"""Checks nobody here wrote, after an apply on a tenant with passkey profiles: Maester's EIDSCA AF04-AF06 read
only the deprecated top level of the FIDO2 configuration, which Graph keeps as a mirror of the default
profile (issue 13 item 9). The checks are taken from tests/data/real/maester-eidsca-fido2.json (the handbook's copy) and
evaluated here as Maester's PowerShell does, against Maester's own request (beta, `('Fido2')` key form)."""
from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from shared.policy.apply import apply_document
from tests.e2e.stack import ANDROID, FAST_SIM, IOS, YUBI, running_stack
from tests.e2e.test_policy_e2e import doc_with

ROOT = Path(__file__).resolve().parents[2]
MAESTER = ROOT / "tests" / "data" / "real" / "maester-eidsca-fido2.json"
FEITIAN = "12ded745-4bed-47d4-abaa-e713f51d6393"
NOT_ENFORCED = {"isEnforced": False, "enforcementType": "allow", "aaGuids": []}


def _ps_true(value: Any) -> bool:
    """Maester casts the raw value to [string] and compares it with 'true' case-insensitively."""
    return str(value).lower() == "true"


def _notcontains_null(values: Any) -> bool:
    """PowerShell's `$list -notcontains $null` (a missing list is $null, which contains nothing)."""
    return None not in (values or [])


#: EIDSCA AF04-AF06, each the PowerShell `rawValue` expression Maester publishes and its translation.
PEER_CHECKS = {
    "EIDSCA.AF04": ("$result.keyRestrictions.isEnforced",
                    lambda r: (r.get("keyRestrictions") or {}).get("isEnforced")),
    "EIDSCA.AF05": ("$result.keyRestrictions.aaGuids -notcontains $null",
                    lambda r: _notcontains_null((r.get("keyRestrictions") or {}).get("aaGuids"))),
    "EIDSCA.AF06": ("$result.keyRestrictions.aaGuids -notcontains $null -and "
                    "($result.keyRestrictions.enforcementType -eq 'allow' -or "
                    "$result.keyRestrictions.enforcementType -eq 'block')",
                    lambda r: _notcontains_null((r.get("keyRestrictions") or {}).get("aaGuids"))
                    and (r.get("keyRestrictions") or {}).get("enforcementType") in ("allow", "block")),
}


def run_peer_checks(fido2: dict[str, Any]) -> dict[str, bool]:
    """Maester's verdict for each of PEER_CHECKS on a GET of the FIDO2 configuration (AF05 and AF06 are
    skipped by Maester when AF04 fails; here that counts as not passing)."""
    published = {c["id"]: c for c in json.loads(MAESTER.read_text(encoding="utf-8"))["checks"]}
    verdicts: dict[str, bool] = {}
    for check_id, (expression, evaluate) in PEER_CHECKS.items():
        check = published[check_id]
        assert check["ps1_rawValue_expression_verbatim"] == expression, f"{check_id} changed upstream"
        passed = _ps_true(evaluate(fido2)) == _ps_true(check["expected_value_pester_Should_Be"])
        skipped = check_id != "EIDSCA.AF04" and not verdicts["EIDSCA.AF04"]
        verdicts[check_id] = passed and not skipped
    return verdicts


def migrated_tenant() -> dict[str, Any]:
    """graphsim/tenants/profiles.json just migrated: the default profile (so the top level) enforces nothing."""
    doc = json.loads((ROOT / "graphsim" / "tenants" / "profiles.json").read_text(encoding="utf-8"))
    doc["tenantId"] = str(uuid.uuid4())
    doc["simulator"] = dict(FAST_SIM)
    fido2 = doc["authenticationMethodConfigurations"]["fido2"]
    fido2["passkeyProfiles"][0]["keyRestrictions"] = copy.deepcopy(NOT_ENFORCED)
    fido2["keyRestrictions"] = copy.deepcopy(NOT_ENFORCED)
    return doc


async def _maester_read(base_url: str) -> dict[str, Any]:
    """Maester's own request: beta, `authenticationMethodConfigurations('Fido2')`."""
    async with httpx.AsyncClient(headers={"Authorization": "Bearer maester"}) as graph:
        resp = await graph.get(base_url.replace("/v1.0", "/beta") + "/policies/authenticationMethodsPolicy/"
                               "authenticationMethodConfigurations('Fido2')")
        assert resp.status_code == 200, resp.text
        return resp.json()


async def test_peer_checks_reading_the_top_level_pass_after_an_apply_on_a_profiles_tenant(azurite):
    """Before the apply Maester's AF04 fails (nothing enforced); after Passkey Guard enforces the allow-list
    on the default profile, AF04-AF06 pass on the top level alone, which now equals the profile's."""
    async with running_stack(azurite, migrated_tenant(), drain=False) as stack:
        before = await _maester_read(stack.sim.base_url)
        assert run_peer_checks(before) == {"EIDSCA.AF04": False, "EIDSCA.AF05": False, "EIDSCA.AF06": False}
        document = doc_with(passkeyMethod__keyRestrictions__aaguids=[ANDROID, IOS, YUBI, FEITIAN])
        result = await apply_document(stack.services, trigger="test", document=document)
        assert result["result"] == "applied" and result["plan"]["mode"] == "profiles"
        after = await _maester_read(stack.sim.base_url)
        assert run_peer_checks(after) == {"EIDSCA.AF04": True, "EIDSCA.AF05": True, "EIDSCA.AF06": True}
        default = after["passkeyProfiles"][0]
        assert after["keyRestrictions"] == default["keyRestrictions"]
        assert after["isAttestationEnforced"] is (default["attestationEnforcement"] == "registrationOnly")
