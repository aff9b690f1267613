"""Tenants with passkey profiles: the legacy top level mirrors the default profile, as the live capture of a
migrated tenant shows, and a PATCH of the legacy fields does what `legacy_patch_in_profiles_tenant` says."""
from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graphsim.launcher import Simulator, start_simulator
from tests.graphsim.conftest import ANDROID, FIDO2_TYPE, IOS, PROFILE_ID, YUBI, base_tenant, raw, start

PATH = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/fido2"
CAPTURE = (Path(__file__).resolve().parents[1] / "data" / "real"
           / "real-tenant-authenticationmethodspolicy-v1-graph2otel.json")
SYNCED_PROFILE = "22222222-0000-4000-8000-000000000002"
ENFORCED = {"isEnforced": True, "enforcementType": "allow", "aaGuids": [YUBI, ANDROID, IOS]}


def captured_fido2() -> dict[str, Any]:
    """The Fido2 configuration of the live capture (tests/data/real), as Graph returned it."""
    policy = json.loads(CAPTURE.read_text(encoding="utf-8"))
    (fido2,) = [c for c in policy["authenticationMethodConfigurations"] if c["id"] == "Fido2"]
    return {k: v for k, v in fido2.items() if not k.endswith("@odata.context")}


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A profiles tenant with a second, non-default profile."""
    tenant = base_tenant(3)
    fido2 = tenant["authenticationMethodConfigurations"]["fido2"]
    fido2["passkeyProfiles"].append({"id": SYNCED_PROFILE, "name": "synced", "passkeyTypes": "synced",
                                     "attestationEnforcement": "disabled",
                                     "keyRestrictions": {"isEnforced": False, "enforcementType": "allow",
                                                         "aaGuids": []}})
    yield from start(tenant)


@pytest.fixture(autouse=True)
def restore(sim: Simulator) -> Iterator[None]:
    """Put the original profiles and knob back after each test."""
    original = raw(sim, "GET", PATH).body
    yield
    sim.configure(legacy_patch_in_profiles_tenant="apply-to-default")
    body = {k: original[k] for k in ("passkeyProfiles", "defaultPasskeyProfile", "includeTargets")}
    assert raw(sim, "PATCH", PATH, {"@odata.type": FIDO2_TYPE, **body}).status == 204


def _top(cfg: dict[str, Any]) -> tuple[Any, Any]:
    return cfg["isAttestationEnforced"], cfg["keyRestrictions"]


def _profile(cfg: dict[str, Any], pid: str) -> dict[str, Any]:
    return next(p for p in cfg["passkeyProfiles"] if p["id"] == pid)


def test_the_live_capture_reads_back_with_its_mirrored_top_level() -> None:
    """A tenant file carrying the live capture's profiles but a stale top level reads back exactly as the
    capture: attestation true (registrationOnly) and the default profile's AAGUID list, duplicate included."""
    captured = captured_fido2()
    stale = copy.deepcopy(captured)
    stale["isAttestationEnforced"] = False
    stale["keyRestrictions"] = {"isEnforced": False, "enforcementType": "block", "aaGuids": []}
    with start_simulator(base_tenant(1, authenticationMethodConfigurations={"fido2": stale})) as live:
        cfg = raw(live, "GET", PATH).body
    assert _top(cfg) == _top(captured)
    assert len(cfg["keyRestrictions"]["aaGuids"]) == 9 and len(set(cfg["keyRestrictions"]["aaGuids"])) == 8


def test_a_patch_of_the_default_profile_moves_the_top_level(sim: Simulator) -> None:
    """Changing the default profile's keyRestrictions and attestation changes the top level the same way;
    changing another profile does not; naming another default profile mirrors that one."""
    cfg = raw(sim, "GET", PATH).body
    profiles = copy.deepcopy(cfg["passkeyProfiles"])
    _profile({"passkeyProfiles": profiles}, PROFILE_ID).update(keyRestrictions=ENFORCED,
                                                               attestationEnforcement="registrationOnly")
    assert raw(sim, "PATCH", PATH, {"@odata.type": FIDO2_TYPE, "passkeyProfiles": profiles}).status == 204
    assert _top(raw(sim, "GET", PATH).body) == (True, ENFORCED)
    _profile({"passkeyProfiles": profiles}, SYNCED_PROFILE)["keyRestrictions"] = {
        "isEnforced": True, "enforcementType": "block", "aaGuids": [ANDROID]}
    assert raw(sim, "PATCH", PATH, {"@odata.type": FIDO2_TYPE, "passkeyProfiles": profiles}).status == 204
    assert _top(raw(sim, "GET", PATH).body) == (True, ENFORCED)
    assert raw(sim, "PATCH", PATH, {"@odata.type": FIDO2_TYPE, "defaultPasskeyProfile": SYNCED_PROFILE}).status == 204
    assert _top(raw(sim, "GET", PATH).body) == (False, {"isEnforced": True, "enforcementType": "block",
                                                        "aaGuids": [ANDROID]})
    assert _top(sim.state(users=False)["authenticationMethodConfigurations"]["fido2"]) == \
        _top(raw(sim, "GET", PATH).body)                                  # ground truth agrees with GET


def test_a_legacy_patch_can_be_ignored(sim: Simulator) -> None:
    """With legacy_patch_in_profiles_tenant=ignore (the harshest reading), a PATCH of the legacy fields
    answers 204 and changes nothing."""
    sim.configure(legacy_patch_in_profiles_tenant="ignore")
    before = raw(sim, "GET", PATH).body
    resp = raw(sim, "PATCH", PATH, {"@odata.type": FIDO2_TYPE, "isAttestationEnforced": True,
                                    "keyRestrictions": ENFORCED})
    assert resp.status == 204 and raw(sim, "GET", PATH).body == before


def test_a_legacy_patch_can_be_rejected(sim: Simulator) -> None:
    """With legacy_patch_in_profiles_tenant=reject, any legacy field in the body is a 400 and nothing
    changes, even alongside a valid profile change."""
    sim.configure(legacy_patch_in_profiles_tenant="reject")
    before = raw(sim, "GET", PATH).body
    profiles = copy.deepcopy(before["passkeyProfiles"])
    profiles[0]["keyRestrictions"] = ENFORCED
    resp = raw(sim, "PATCH", PATH, {"@odata.type": FIDO2_TYPE, "passkeyProfiles": profiles,
                                    "keyRestrictions": ENFORCED})
    assert resp.status == 400 and "passkey profile" in resp.body["error"]["message"]
    assert raw(sim, "GET", PATH).body == before
    assert raw(sim, "PATCH", PATH, {"@odata.type": FIDO2_TYPE, "passkeyProfiles": profiles}).status == 204


def test_a_legacy_patch_applies_to_the_default_profile_by_default(sim: Simulator) -> None:
    """By default (apply-to-default, which the contract tests need), the legacy values land in the default
    profile only, and the top level mirrors it."""
    assert sim.configure()["legacy_patch_in_profiles_tenant"] == "apply-to-default"
    resp = raw(sim, "PATCH", PATH, {"@odata.type": FIDO2_TYPE, "isAttestationEnforced": True,
                                    "keyRestrictions": ENFORCED})
    assert resp.status == 204
    cfg = raw(sim, "GET", PATH).body
    assert _profile(cfg, PROFILE_ID)["keyRestrictions"] == ENFORCED
    assert _profile(cfg, PROFILE_ID)["attestationEnforcement"] == "registrationOnly"
    assert _profile(cfg, SYNCED_PROFILE)["keyRestrictions"]["isEnforced"] is False
    assert _top(cfg) == (True, ENFORCED)


def test_the_knob_takes_only_its_three_values(sim: Simulator) -> None:
    """An unknown mode is refused by /_sim/config, so a typo cannot leave the default in place."""
    resp = raw(sim, "PATCH", sim.root_url + "/_sim/config", {"legacy_patch_in_profiles_tenant": "apply"}, token=None)
    assert resp.status == 400 and sim.configure()["legacy_patch_in_profiles_tenant"] == "apply-to-default"
