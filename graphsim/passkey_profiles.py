"""Tenants migrated to passkey profiles: the deprecated top level mirrors the default profile.

The live capture of a migrated tenant (`../shared/data/real/real-tenant-authenticationmethodspolicy-…`)
returns the top-level `isAttestationEnforced` and `keyRestrictions` of the FIDO2 configuration as a copy
of the default passkey profile (`registrationOnly` reads as `true`; the AAGUID list is copied as it is,
duplicates included). Graph's metadata marks both top-level fields deprecated (data stops 2027-10-15).
The simulator keeps the mirror in the stored configuration itself, recomputed at load and after every
PATCH, so GET, `/_sim/state` and the peer checks that read only the top level all see the same thing.

What a PATCH of the legacy fields does in such a tenant is unpublished. Knob
`legacy_patch_in_profiles_tenant`:
- `"ignore"` (the pessimistic setting, for tests and benchmarks that opt in): 204 and nothing changes;
  the top level goes on mirroring the default profile. A silent no-op is the harshest reading for a
  client: only reading the policy back shows the write did nothing.
- `"reject"`: 400 `BadRequest`, nothing changes (for tests that must prove no legacy field is sent).
- `"apply-to-default"` (default): the legacy values are written into the default profile (after any
  `passkeyProfiles` in the same body), and the top level mirrors the result. It is the default only
  because the contract tests (../shared/conformance) PATCH the legacy `keyRestrictions` of a profiles
  tenant and expect to read them back changed, with the profiles otherwise kept.
"""
from __future__ import annotations

import copy
from typing import Any

from graphsim.errors import bad_request

LEGACY_FIELDS = ("isAttestationEnforced", "keyRestrictions")
ATTESTATION_ON, ATTESTATION_OFF = "registrationOnly", "disabled"


def default_profile(config: dict[str, Any]) -> dict[str, Any] | None:
    """The profile named by `defaultPasskeyProfile` (or the only profile there is); None in a legacy tenant."""
    profiles = [p for p in config.get("passkeyProfiles") or [] if isinstance(p, dict)]
    wanted = str(config.get("defaultPasskeyProfile") or "").lower()
    hits = [p for p in profiles if str(p.get("id", "")).lower() == wanted]
    if len(hits) == 1:
        return hits[0]
    return profiles[0] if len(profiles) == 1 else None


def mirror_default_profile(config: dict[str, Any]) -> None:
    """Make the top-level legacy fields a copy of the default profile's (no-op in a legacy tenant)."""
    profile = default_profile(config)
    if profile is None:
        return
    config["isAttestationEnforced"] = profile.get("attestationEnforcement") == ATTESTATION_ON
    config["keyRestrictions"] = copy.deepcopy(profile.get("keyRestrictions")
                                              or {"isEnforced": False, "enforcementType": "allow", "aaGuids": []})


def legacy_patch(new: dict[str, Any], body: dict[str, Any], mode: str) -> None:
    """Carry out a PATCH body's legacy fields in a tenant with profiles as `mode` says, then mirror.

    `new` is the configuration after the body was applied field by field (legacy values already checked
    and copied in); it is changed in place. Raises the 400 of mode `reject`.
    """
    sent = [name for name in LEGACY_FIELDS if name in body]
    profile = default_profile(new)
    if sent and profile is not None:
        if mode == "reject":
            raise bad_request(f"'{sent[0]}' is deprecated and cannot be set on a configuration with passkey "
                              "profiles; set attestationEnforcement and keyRestrictions on the passkey profile.")
        if mode == "apply-to-default":
            if "isAttestationEnforced" in body:
                profile["attestationEnforcement"] = ATTESTATION_ON if new["isAttestationEnforced"] else ATTESTATION_OFF
            if "keyRestrictions" in body:
                profile["keyRestrictions"] = copy.deepcopy(new["keyRestrictions"])
    mirror_default_profile(new)
