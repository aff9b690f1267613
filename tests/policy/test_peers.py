"""The peer-check mapping (shared/policy/peers.py) held to the published checks in tests/data/real/: every id we
cite is published, every published check is mapped or said to be not covered, and where a published rule is a
plain property comparison, running it shows the relation we claim (same verdict, or the opposite for `differs`)."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from shared.policy.checks import CHECKS, build_check_context
from shared.policy.peers import (
    CIPP,
    EIDSCA,
    MAESTER,
    NOT_COVERED,
    PEERS,
    RELATIONS,
    SCUBAGEAR,
    SOURCES,
    PeerCheck,
    Relation,
    peers_of,
)
from tests.policy.policy_factories import YUBIKEY, desired, legacy_fido2, strength

REAL = Path(__file__).resolve().parents[1] / "data" / "real"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((REAL / name).read_text(encoding="utf-8"))
    return data


MAESTER_FILE = _load("maester-eidsca-fido2.json")
CIPP_FILE = _load("cipp-fido2-passkey-standards.json")
SCUBA_FILE = _load("scubagear-aad-phishing-resistant-mfa.json")


def published() -> dict[tuple[str, str], dict[str, Any]]:
    """Every peer check the three files define, by (tool, id): Maester's generated checks, the EIDSCA checks
    Maester does not generate, CIPP's standards and tests, ScubaGear's policies. (Framework tags a CIPP standard
    merely cites, such as SMB1001 or NIST CSF, are not checks these files define.)"""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for check in MAESTER_FILE["checks"]:
        found[(MAESTER, check["id"])] = check
    for check in MAESTER_FILE["upstream_only_checks_not_generated_by_maester_verbatim"]:
        found[(EIDSCA, check["CheckId"])] = check
    for name, standard in CIPP_FILE["standards"].items():
        found[(CIPP, name)] = standard
    for group in CIPP_FILE["tests"].values():
        for name, test in group.items():
            found[(CIPP, name)] = test
    for name, policy in SCUBA_FILE["policies"].items():
        found[(SCUBAGEAR, name)] = policy
    return found


def mapped() -> set[tuple[str, str]]:
    """Every (tool, id) some check of ours maps to."""
    return {(p.tool, p.id) for peers in PEERS.values() for p in peers}


def test_the_files_define_the_peer_checks_we_expect_to_read() -> None:
    """The parse finds Maester's AF01-AF06, CIPP's EIDSCA tests and ScubaGear's MS.AAD.3.x (so a renamed key in
    a replaced file cannot leave the checks below vacuous)."""
    tools = {tool for tool, _ in published()}
    assert tools == {MAESTER, EIDSCA, CIPP, SCUBAGEAR}
    assert len([k for k in published() if k[0] == MAESTER]) == len(MAESTER_FILE["checks"]) >= 6


def test_every_check_has_its_peer_entry() -> None:
    """PEERS names every check of ours and no other id, and each check carries exactly its entry."""
    assert set(PEERS) == {c.id for c in CHECKS}
    for c in CHECKS:
        assert c.peers == PEERS[c.id] == peers_of(c.id)
    assert peers_of("PG-NOPE-001") == ()


def test_every_cited_peer_id_is_published() -> None:
    """Each peer id we map to or call not covered is defined in the real files, under the tool we name."""
    cited = mapped() | {(u.tool, u.id) for u in NOT_COVERED}
    assert cited - set(published()) == set()


def test_every_published_peer_check_is_mapped_or_said_not_covered() -> None:
    """No published FIDO2/passkey/phishing-resistant check is silently left out; none is both mapped and
    listed as not covered; every not-covered entry says why."""
    uncovered = {(u.tool, u.id) for u in NOT_COVERED}
    assert set(published()) - mapped() - uncovered == set()
    assert mapped() & uncovered == set()
    assert all(u.because for u in NOT_COVERED)


def test_sources_name_the_commits_the_files_were_copied_at() -> None:
    """The report's source line for each tool names the commit its file records."""
    commits = {MAESTER: MAESTER_FILE["maester_commit"], EIDSCA: MAESTER_FILE["upstream_last_commit_touching_file"],
               CIPP: CIPP_FILE["head_commit"], SCUBAGEAR: SCUBA_FILE["head_commit"]}
    for tool, commit in commits.items():
        assert f" at {commit[:8]}" in SOURCES[tool], tool


def test_a_mapping_that_is_not_the_same_must_say_how() -> None:
    """A stricter, partial or differing mapping without a note, or an unknown relation, is refused."""
    with pytest.raises(ValueError, match="note"):
        PeerCheck(MAESTER, "EIDSCA.AF03", "differs")
    with pytest.raises(ValueError, match="relation"):
        PeerCheck(MAESTER, "EIDSCA.AF03", "agrees")  # type: ignore[arg-type]
    assert PeerCheck(MAESTER, "EIDSCA.AF01", "same").to_json() == {
        "tool": MAESTER, "id": "EIDSCA.AF01", "relation": "same"}


def test_the_openapi_description_lists_the_relations() -> None:
    """openapi/passkey-guard.yaml's PeerCheck and the `Relation` type offer exactly the relations explained."""
    spec = yaml.safe_load((REAL.parents[2] / "openapi" / "passkey-guard.yaml").read_text(encoding="utf-8"))
    assert set(spec["components"]["schemas"]["PeerCheck"]["properties"]["relation"]["enum"]) == set(RELATIONS)
    assert set(get_args(Relation)) == set(RELATIONS)


def test_attestation_is_mapped_as_a_deliberate_difference() -> None:
    """PG-FIDO2-004 (attestation off) shows Maester's EIDSCA.AF03 as `differs`, citing the seed procedure, and
    CIPP's EIDSCAAF03 as `differs` pointing there, never as agreement."""
    peers = {p.id: p for p in PEERS["PG-FIDO2-004"]}
    assert peers["EIDSCA.AF03"].relation == "differs"
    assert "seed procedure" in peers["EIDSCA.AF03"].note and "Enforce attestation = No" in peers["EIDSCA.AF03"].note
    assert peers["EIDSCAAF03"].relation == "differs" and "EIDSCA.AF03" in peers["EIDSCAAF03"].note


# --- running the published rules that are plain property comparisons ---------------------------------------
_MAESTER_RULE = re.compile(r"^\.(?P<path>[\w.]+) -eq '(?P<want>\w+)'$")
_CIPP_RULE = re.compile(r"^\$Fido2Config\.(?P<path>[\w.]+) -eq (?:'(?P<want>\w+)'|\$(?P<bool>true|false))$")


def _value(raw: dict[str, Any], path: str) -> Any:
    value: Any = raw
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def simple_rules() -> dict[tuple[str, str], Callable[[dict[str, Any]], bool]]:
    """The published rules of the form `.property -eq 'value'` (Maester) or `$Fido2Config.property -eq value`
    (CIPP), evaluated as PowerShell does: the value as a string, compared case-insensitively."""
    rules: dict[tuple[str, str], Callable[[dict[str, Any]], bool]] = {}
    for check in MAESTER_FILE["checks"]:
        if m := _MAESTER_RULE.match(check["tested_expression_as_published"]):
            rules[(MAESTER, check["id"])] = _rule(m["path"], m["want"])
    for name, test in CIPP_FILE["tests"]["EIDSCA"].items():
        if m := _CIPP_RULE.match(test["pass_condition_verbatim"]):
            rules[(CIPP, name)] = _rule(m["path"], m["want"] or m["bool"])
    return rules


def _rule(path: str, want: str) -> Callable[[dict[str, Any]], bool]:
    return lambda raw: str(_value(raw, path)).lower() == want.lower()


TENANTS = {
    "as the seed says": legacy_fido2(),
    "method disabled": legacy_fido2(state="disabled"),
    "self-service off": legacy_fido2(self_service=False),
    "attestation enforced": legacy_fido2(attestation=True),
    "restrictions not enforced": legacy_fido2(enforced=False),
    "block list": legacy_fido2(mode="block", aaguids=[YUBIKEY]),
}


def test_the_plain_published_rules_are_found() -> None:
    """Maester's AF01-AF04 and CIPP's EIDSCAAF01-AF04 are plain comparisons this test can run."""
    assert {pid for _, pid in simple_rules()} == {
        "EIDSCA.AF01", "EIDSCA.AF02", "EIDSCA.AF03", "EIDSCA.AF04",
        "EIDSCAAF01", "EIDSCAAF02", "EIDSCAAF03", "EIDSCAAF04"}


@pytest.mark.parametrize("tenant", TENANTS, ids=list(TENANTS))
def test_running_the_published_rules_shows_the_relation_we_claim(tenant: str) -> None:
    """On each tenant, a `same` peer gives our check's verdict, a `differs` peer the opposite one, and a
    `stricter` mapping never has ours pass where the peer fails."""
    ctx = build_check_context(desired(), TENANTS[tenant], [strength(aaguids=None)])
    rules = simple_rules()
    compared = 0
    for check in CHECKS:
        ours = check.fn(ctx).status
        for peer in check.peers:
            rule = rules.get((peer.tool, peer.id))
            if rule is None or ours == "skipped":
                continue
            theirs = "passed" if rule(TENANTS[tenant]) else "failed"
            if peer.relation == "same":
                assert theirs == ours, (check.id, peer.label, ours, theirs)
            elif peer.relation == "differs":
                assert theirs != ours, (check.id, peer.label, ours, theirs)
            else:
                assert peer.relation == "stricter" and not (ours == "passed" and theirs == "failed"), (
                    check.id, peer.label, ours, theirs)
            compared += 1
    assert compared == 8
