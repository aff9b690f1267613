"""The published peer checks each of our compliance checks answers to, as data (issue 13).

Administrators already know Maester's EIDSCA AF01-AF06, CIPP's FIDO2 standards and tests and ScubaGear's
MS.AAD.3.x; the verification report shows, beside each of our check ids, the peer ids it maps to and how
they relate. Where the organisation deliberately decided otherwise (attestation off, where EIDSCA.AF03
expects it on), the mapping says `differs` and why, so the report never claims an agreement there is not.

The ids are copied from the published checks in `tests/data/real/` (the handbook's `../shared/data/real/`):
`maester-eidsca-fido2.json`, `cipp-fido2-passkey-standards.json`, `scubagear-aad-phishing-resistant-mfa.json`.
Every peer check those files define is either mapped here or listed in `NOT_COVERED` with the reason;
`tests/policy/test_peers.py` holds both to the files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Relation = Literal["same", "stricter", "partial", "differs"]

#: What each relation means, for the report's readers.
RELATIONS: dict[Relation, str] = {
    "same": "passes and fails on the same setting as our check",
    "stricter": "our check also fails in cases the peer check passes",
    "partial": "the peer check asks more than our check; the rest is covered elsewhere or not at all",
    "differs": "the peer check expects something the organisation deliberately decided against",
}

MAESTER, EIDSCA, CIPP, SCUBAGEAR = "Maester", "EIDSCA", "CIPP", "ScubaGear"

#: Where each tool's checks come from (repository and commit of the published copy the ids are taken from).
SOURCES: dict[str, str] = {
    MAESTER: "maester365/maester at 6bf1d98f; it reads only the deprecated top-level FIDO2 fields, which Graph "
             "mirrors from the default passkey profile",
    EIDSCA: "Cloud-Architekt/AzureAD-Attack-Defense (AADSCAv4) at cb1eb1e8; listed upstream, not run by Maester",
    CIPP: "KelvinTegelaar/CIPP-API at adf32422; standards.FIDO2PasskeyProfiles reads the tenant's default passkey "
          "profile (a tenant without one is non-compliant), while our checks read the profile the document manages, "
          "or the legacy top level",
    SCUBAGEAR: "cisagov/ScubaGear at 4d34e9a4",
}


@dataclass(frozen=True)
class PeerCheck:
    """One published peer check our check maps to: the tool, its id, how the two relate, and why."""

    tool: str
    id: str
    relation: Relation
    note: str = ""

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise ValueError(f"unknown relation {self.relation!r} for {self.tool} {self.id}")
        if self.relation != "same" and not self.note:
            raise ValueError(f"{self.tool} {self.id} is {self.relation}: say how in a note")

    @property
    def label(self) -> str:
        """`Tool ID`, as the report's table shows it."""
        return f"{self.tool} {self.id}"

    def to_json(self) -> dict[str, Any]:
        """The mapping as report JSON: tool, id, relation and (when there is one) the note."""
        return {"tool": self.tool, "id": self.id, "relation": self.relation,
                **({"note": self.note} if self.note else {})}


@dataclass(frozen=True)
class UncoveredPeerCheck:
    """A published peer check on the same subject that none of our checks covers, and why."""

    tool: str
    id: str
    because: str

    def to_json(self) -> dict[str, str]:
        """Report JSON: tool, id and the reason."""
        return {"tool": self.tool, "id": self.id, "because": self.because}


_ATTESTATION_WHY = ("the seed procedure ('Enable Microsoft Authenticator passkey sign in') says Enforce "
                    "attestation = No for Authenticator passkeys: with it on, a passkey's metadata must be in the "
                    "FIDO Alliance Metadata Service and pass Microsoft's validation, and attestation support for "
                    "them is only planned")
_CA_SCOPE = "ScubaGear needs an enabled policy for All users and All resources requiring a phishing-resistant strength"

#: For every check id in shared/policy/checks.py, the peer checks it maps to (an empty tuple: none does).
PEERS: dict[str, tuple[PeerCheck, ...]] = {
    "PG-FIDO2-001": (
        PeerCheck(MAESTER, "EIDSCA.AF01", "same"),
        PeerCheck(CIPP, "EIDSCAAF01", "same"),
        PeerCheck(CIPP, "ZTNA21838", "same"),
        PeerCheck(CIPP, "standards.EnableFIDO2", "same",
                  "its check reads only state; its remediation also turns attestation on (see PG-FIDO2-004)"),
        PeerCheck(CIPP, "standards.AuthenticationMethods", "partial",
                  "it switches every method and sets one FIDO2 group; the group is PG-FIDO2-002"),
    ),
    "PG-FIDO2-002": (
        PeerCheck(EIDSCA, "EIDSCA.AF07", "stricter",
                  "EIDSCA lists the included users and groups with no recommended value; we require the "
                  "document's include targets"),
        PeerCheck(EIDSCA, "EIDSCA.AF08", "stricter",
                  "EIDSCA lists the excluded users and groups with no recommended value; we require the "
                  "document's exclude targets"),
        PeerCheck(CIPP, "ZTNA21839", "stricter",
                  "CIPP passes an enabled method with any include target; we require exactly the document's "
                  "include and exclude targets (enabled is PG-FIDO2-001)"),
        PeerCheck(CIPP, "standards.AuthenticationMethods", "partial",
                  "it sets one FIDO2 group (FIDO2Group) and switches every method; enabled is PG-FIDO2-001"),
    ),
    "PG-FIDO2-003": (
        PeerCheck(MAESTER, "EIDSCA.AF02", "same"),
        PeerCheck(CIPP, "EIDSCAAF02", "same"),
    ),
    "PG-FIDO2-004": (
        PeerCheck(MAESTER, "EIDSCA.AF03", "differs",
                  "Maester expects isAttestationEnforced true and fails a tenant that passes here; "
                  + _ATTESTATION_WHY),
        PeerCheck(CIPP, "EIDSCAAF03", "differs",
                  "CIPP passes only isAttestationEnforced true; attestation stays off for the reason given at "
                  "EIDSCA.AF03"),
        PeerCheck(CIPP, "standards.EnableFIDO2", "differs",
                  "its remediation PATCH sets isAttestationEnforced true, which fails this check; attestation stays "
                  "off for the reason given at EIDSCA.AF03"),
        PeerCheck(CIPP, "standards.FIDO2PasskeyProfiles", "partial",
                  "agrees when set to Attestation Enforcement = Disabled; it also compares passkey types and key "
                  "restrictions"),
    ),
    "PG-FIDO2-005": (
        PeerCheck(MAESTER, "EIDSCA.AF04", "stricter",
                  "Maester passes enforced restrictions in either mode; the seed procedure needs Restrict specific "
                  "keys = Allow (on a tenant with passkey profiles Maester reads the top-level mirror of the "
                  "default profile)"),
        PeerCheck(MAESTER, "EIDSCA.AF06", "stricter",
                  "Maester also passes block mode; the seed procedure needs Restrict specific keys = Allow"),
        PeerCheck(CIPP, "EIDSCAAF04", "stricter",
                  "CIPP passes enforced restrictions in either mode; the seed procedure needs Restrict specific "
                  "keys = Allow"),
        PeerCheck(CIPP, "EIDSCAAF06", "stricter",
                  "CIPP also passes block mode; the seed procedure needs Restrict specific keys = Allow"),
        PeerCheck(CIPP, "standards.FIDO2PasskeyProfiles", "partial",
                  "agrees when set to Enforce AAGUID Key Restrictions on, Key Restriction Type = Allow"),
    ),
    "PG-FIDO2-006": (
        PeerCheck(MAESTER, "EIDSCA.AF05", "stricter",
                  "Maester passes any list without a null entry, an empty one too (-notcontains $null); we "
                  "require both Microsoft Authenticator AAGUIDs and the document's"),
        PeerCheck(CIPP, "EIDSCAAF05", "stricter",
                  "CIPP passes any non-empty list; we require both Microsoft Authenticator AAGUIDs and the "
                  "document's"),
        PeerCheck(CIPP, "standards.FIDO2PasskeyProfiles", "partial",
                  "CIPP fails on any AAGUID outside its list, while apply keeps AAGUIDs already allowed unless "
                  "the document removes them: give CIPP the tenant's whole allow list"),
    ),
    # No published check remembers the allow list between runs, so none sees an AAGUID silently vanish.
    "PG-FIDO2-007": (),
    "PG-AUTHSTR-001": (
        PeerCheck(SCUBAGEAR, "MS.AAD.3.1v1", "partial",
                  "ScubaGear accepts a strength whose combinations are a non-empty subset of "
                  "windowsHelloForBusiness, fido2 and x509CertificateMultiFactor (ours, fido2 only, is) and "
                  "never looks at its AAGUIDs; the rest of MS.AAD.3.1v1 is PG-CA-001 to PG-CA-004"),
    ),
    "PG-CA-001": (
        PeerCheck(SCUBAGEAR, "MS.AAD.3.1v1", "partial",
                  _CA_SCOPE + "; this check covers the grant, PG-CA-002 the state, PG-CA-004 the scope"),
    ),
    "PG-CA-002": (
        PeerCheck(SCUBAGEAR, "MS.AAD.3.1v1", "differs",
                  "ScubaGear counts only an enabled policy; the document decides the state, and keeps ours "
                  "report-only (the default) to measure who it would block before enforcing it"),
    ),
    "PG-CA-003": (
        PeerCheck(SCUBAGEAR, "MS.AAD.3.1v1", "differs",
                  "ScubaGear fails a policy excluding users or groups its configuration does not permit "
                  "(CapExclusions), while we require the emergency-access exclusion: list those accounts or "
                  "groups in ScubaGear's configuration"),
    ),
    "PG-CA-004": (
        PeerCheck(SCUBAGEAR, "MS.AAD.3.1v1", "differs",
                  _CA_SCOPE + " and no excluded roles; ours covers the users, groups and applications the "
                  "document decides (a pilot group, say), so a narrower policy passes here and fails there"),
    ),
    "PG-DOC-001": (
        PeerCheck(CIPP, "standards.FIDO2PasskeyProfiles", "partial",
                  "both compare the tenant with a declared configuration: CIPP passkey types, attestation and "
                  "key restrictions, we every field the document decides (passkey types are not among them)"),
    ),
}

#: Published peer checks on FIDO2, passkeys or phishing-resistant MFA that none of our checks covers.
NOT_COVERED: tuple[UncoveredPeerCheck, ...] = (
    UncoveredPeerCheck(SCUBAGEAR, "MS.AAD.3.5v2",
                       "it requires SMS, Voice call and Email OTP off; Passkey Guard manages the Passkey (FIDO2) "
                       "method only and never reads or writes other methods"),
    UncoveredPeerCheck(SCUBAGEAR, "MS.AAD.3.6v1",
                       "it requires a Conditional Access policy including every highly privileged directory role; "
                       "the document's policy names users, groups and applications, not directory roles"),
)


def peers_of(check_id: str) -> tuple[PeerCheck, ...]:
    """The peer checks `check_id` maps to (empty for an id not in `PEERS`)."""
    return PEERS.get(check_id, ())
