"""Everything people read: plan tables and Markdown (ids by name, no placeholder, CA keywords in words)
and the verification report as JSON and Markdown."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from shared.policy.checks import Report, build_check_context, run_checks
from shared.policy.peers import NOT_COVERED, PEERS
from shared.policy.plan import build_plan
from shared.policy.plan_codec import plan_from_json, plan_to_json
from shared.policy.plan_model import STRENGTH_ID_PLACEHOLDER, Plan
from shared.policy.render import plan_to_markdown, render_plan_table, report_to_json, report_to_markdown
from tests.policy.policy_factories import (
    ANDROID,
    APP,
    BREAK_GLASS,
    GROUP_A,
    GROUP_B,
    IOS,
    ONEPASSWORD,
    YUBIKEY,
    ca_policy,
    ca_section,
    desired,
    legacy_fido2,
    method,
    rich_plan,
    security_group,
    strength,
)


def test_text_table_shows_names_beside_aaguids() -> None:
    """The fixed-width table shows AAGUIDs with names (document's, shipped) and falls back to the bare GUID."""
    text = render_plan_table(rich_plan())
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("AREA"))
    assert header.split() == ["AREA", "FIELD", "BEFORE", "AFTER", "NOTE"]
    assert f"{YUBIKEY} (YubiKey | 5)" in text
    assert f"{ONEPASSWORD} (1Password)" in text
    assert f"{ANDROID} (Microsoft Authenticator (Android))" in text
    assert "LOCKOUT: 1 registered passkey(s)" in text and "ada@contoso.com" in text
    assert "requires explicit acceptance" in text
    # fixed width: every table row starts its BEFORE column at the same offset
    col = header.index("BEFORE")
    rows = lines[lines.index(header) + 2:]
    aaguid_rows = [r for r in rows if r.startswith("passkeyMethod")]
    assert aaguid_rows and all(r[col - 2:col] == "  " for r in aaguid_rows)


def test_text_table_for_empty_plan() -> None:
    """An empty plan says there is nothing to change."""
    plan = build_plan(desired(), legacy_fido2(), [strength(aaguids=[ANDROID, IOS])], [], {})
    assert "No changes" in render_plan_table(plan)


def test_plan_markdown() -> None:
    """The Markdown plan has a header, a changes table with escaped pipes, warnings and the lockout table."""
    md = plan_to_markdown(rich_plan(), tenant_id="tenant-1", generated_at="2026-05-01T10:00:00Z", plan_id="p-1")
    assert md.startswith("# Passkey Guard plan\n")
    assert "- Tenant: `tenant-1`" in md and "- Plan: `p-1`" in md and "2026-05-01T10:00:00Z" in md
    assert "| Area | Field | Before | After | Note |" in md
    assert "YubiKey \\| 5" in md
    assert "`no_emergency_access`" in md
    assert "## Lockout" in md and "ada@contoso.com" in md
    assert "requires acceptance" in md


def test_plan_markdown_blocked() -> None:
    """A plan with errors says it is blocked."""
    plan = build_plan(desired(passkeyMethod=method(includeTargets=["11111111-1111-1111-1111-111111111111"])),
                      legacy_fido2(), [], [], {})
    assert "**BLOCKED" in plan_to_markdown(plan)


ALICE = "66666666-6666-6666-6666-666666666666"


GHOST = "77777777-7777-7777-7777-777777777777"


HIDDEN_APP = "88888888-8888-8888-8888-888888888888"


DIRECTORY: dict[str, dict[str, Any] | None] = {
    ALICE: {"id": ALICE, "displayName": "Alice Admin", "userPrincipalName": "alice@contoso.example"},
    BREAK_GLASS: {"id": BREAK_GLASS, "displayName": "Break Glass", "userPrincipalName": "bg@contoso.example"},
    GHOST: None,
    APP: {"appId": APP, "displayName": "Payroll"},
}


def new_ca_plan() -> Plan:
    """A plan that creates the strength and a CA policy naming users, groups and applications."""
    state = desired(conditionalAccess=ca_section(
        includeUsers=[ALICE, GHOST], includeGroups=[GROUP_A], excludeUsers=[BREAK_GLASS], excludeGroups=[GROUP_B],
        includeApplications=[APP, HIDDEN_APP, "Office365"]))
    groups = {GROUP_A: security_group(GROUP_A, "Passkey pilot"), GROUP_B: security_group(GROUP_B, "Emergency")}
    return build_plan(state, legacy_fido2(), [], [], groups, DIRECTORY)


def test_new_strength_and_ca_show_no_placeholder() -> None:
    """A plan that creates strength and CA policy shows no `{{` in its table or Markdown, the new strength by name."""
    plan = new_ca_plan()
    for text in (render_plan_table(plan), plan_to_markdown(plan, tenant_id="t")):
        assert "{{" not in text, text
        assert "the new strength 'Authenticator passkey'" in text
    create = next(w for w in plan.writes if w["op"] == "create_ca_policy")
    assert create["body"]["grantControls"]["authenticationStrength"]["id"] == STRENGTH_ID_PLACEHOLDER


def test_new_ca_lists_who_and_what_it_covers_by_name() -> None:
    """Users, groups and applications a new CA policy includes and excludes are shown by name."""
    plan = new_ca_plan()
    fields = {c.field for c in plan.changes}
    assert {"conditions.users.includeUsers", "conditions.users.includeGroups", "conditions.users.excludeUsers",
            "conditions.users.excludeGroups", "conditions.applications.includeApplications"} <= fields
    for text in (render_plan_table(plan), plan_to_markdown(plan, tenant_id="t")):
        for shown in ("Alice Admin (alice@contoso.example)", "Break Glass (bg@contoso.example)",
                      f"Passkey pilot ({GROUP_A})", f"Emergency ({GROUP_B})", f"Payroll ({APP})", "Office 365"):
            assert shown in text, (shown, text)


def test_unknown_names_show_the_id_with_a_note() -> None:
    """A user that does not exist and an app whose name could not be read show as ids with a note."""
    text = render_plan_table(new_ca_plan())
    assert f"{GHOST} (not found)" in text
    assert f"{HIDDEN_APP} (name not readable)" in text


def test_special_values_in_words() -> None:
    """All, GuestsOrExternalUsers and the app keywords are said in words."""
    state = desired(conditionalAccess=ca_section(includeUsers=["All"], includeApplications=["All"]))
    text = render_plan_table(build_plan(state, legacy_fido2(), [], [], {}, DIRECTORY))
    assert "All users" in text and "All cloud apps" in text
    state = desired(conditionalAccess=ca_section(includeUsers=["All"], includeApplications=["MicrosoftAdminPortals"]))
    changed = build_plan(state, legacy_fido2(), [strength(aaguids=None)],
                         [ca_policy(include_users=["GuestsOrExternalUsers"], apps=["None"])], {}, DIRECTORY)
    text = render_plan_table(changed)
    assert "Guests or external users" in text and "Microsoft Admin Portals" in text and "No cloud apps" in text


def test_existing_strength_by_name() -> None:
    """A CA grant that moves to our existing strength shows both strengths as '<name> (<id>)'."""
    other = {**strength("s-other", "Password and SMS"), "allowedCombinations": ["password,sms"]}
    state = desired(conditionalAccess=ca_section())
    made = build_plan(state, legacy_fido2(), [strength(aaguids=None), other], [ca_policy(strength_id="s-other")],
                      {}, DIRECTORY)
    row = next(c for c in made.changes if c.field == "grantControls.authenticationStrength.id")
    assert (row.before, row.after) == ("s-other", "s-ours")
    for text in (render_plan_table(made), plan_to_markdown(made)):
        assert "Password and SMS (s-other)" in text and "Authenticator passkey (s-ours)" in text


def test_names_survive_the_stored_plan() -> None:
    """Names ride along in plan JSON, so a stored plan renders the same table."""
    plan = new_ca_plan()
    loaded = plan_from_json(plan_to_json(plan))
    assert render_plan_table(loaded) == render_plan_table(plan)
    assert plan_to_json(loaded) == plan_to_json(plan)


def test_changed_ca_names_what_it_covers_today() -> None:
    """Updating a CA policy shows the users, groups and apps it covers today by name too (the BEFORE side)."""
    old_group = "99999999-9999-9999-9999-999999999999"
    directory = {**DIRECTORY, old_group: {"id": old_group, "displayName": "Old pilot"}}
    current = ca_policy(include_users=[ALICE], include_groups=[old_group], apps=[HIDDEN_APP])
    state = desired(conditionalAccess=ca_section())
    text = render_plan_table(build_plan(state, legacy_fido2(), [strength(aaguids=None)], [current], {}, directory))
    for shown in ("Alice Admin (alice@contoso.example)", f"Old pilot ({old_group})",
                  f"{HIDDEN_APP} (name not readable)", f"Payroll ({APP})"):
        assert shown in text, (shown, text)


WHEN = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def failing_report() -> Report:
    """A report with failures (attestation on, iOS missing, an AAGUID vanished, strength unrestricted)."""
    state = desired(aaguidNames={ONEPASSWORD: "Team | vault"})
    ctx = build_check_context(state, legacy_fido2(attestation=True, aaguids=[ANDROID]), [strength()], None,
                              [ANDROID, IOS, ONEPASSWORD])
    return run_checks(ctx)


def test_report_json() -> None:
    """The JSON report has tenant, UTC time, verdict, counts and each check with its texts and peer checks."""
    doc = report_to_json(failing_report(), tenant_id="tenant-1", generated_at=WHEN)
    json.dumps(doc)  # serialisable
    assert doc["tenantId"] == "tenant-1" and doc["generatedAt"] == "2026-05-01T12:00:00Z"
    assert doc["passed"] is False
    assert doc["summary"]["failed"] == len([c for c in doc["checks"] if c["status"] == "failed"]) > 0
    assert doc["summary"]["total"] == 13
    first = doc["checks"][0]
    assert set(first) == {"id", "title", "status", "reason", "rationale", "remediation", "peers"}


def test_report_time_is_normalised_to_utc() -> None:
    """Aware times are converted to UTC; naive ones are taken as UTC."""
    plus2 = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert report_to_json(failing_report(), tenant_id="t", generated_at=plus2)["generatedAt"] == "2026-05-01T12:00:00Z"
    naive = WHEN.replace(tzinfo=None)
    assert report_to_json(failing_report(), tenant_id="t", generated_at=naive)["generatedAt"] == "2026-05-01T12:00:00Z"


def test_report_markdown_for_a_ticket() -> None:
    """Markdown: header with tenant and time, summary, PASS/FAIL/SKIP table, remediation of failed checks."""
    md = report_to_markdown(failing_report(), tenant_id="tenant-1", generated_at=WHEN)
    lines = md.splitlines()
    assert lines[0] == "# Passkey Guard verification report"
    assert "- Tenant: `tenant-1`" in lines and "- Generated: 2026-05-01T12:00:00Z" in lines
    assert any(line.startswith("**NOT COMPLIANT:") for line in lines)
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| Status | Check | Peer checks | Title | Reason |"
    markers = {line.split("|")[1].strip() for line in table[1:]}
    assert markers <= {"PASS", "FAIL", "SKIP"} and {"PASS", "FAIL", "SKIP"} <= markers
    assert "Team \\| vault" in md  # pipes in reasons are escaped
    remediation = md.split("## Remediation", 1)[1]
    assert "**PG-FIDO2-004**" in remediation and "Enforce attestation = No" in remediation
    assert "**PG-FIDO2-007**" in remediation
    assert "**PG-FIDO2-001**" not in remediation  # passed checks are not listed


def test_compliant_markdown_has_no_remediation() -> None:
    """A passing report says COMPLIANT and has no remediation section."""
    ctx = build_check_context(desired(), legacy_fido2(), [strength(aaguids=[ANDROID, IOS])])
    md = report_to_markdown(run_checks(ctx), tenant_id="t", generated_at="2026-05-01T12:00:00Z")
    assert "**COMPLIANT: 8 passed, 0 failed, 5 skipped**" in md
    assert "## Remediation" not in md


def test_report_json_shows_each_checks_peer_checks_and_what_none_covers() -> None:
    """Each check in the JSON lists the peer checks it maps to (tool, id, relation, note), the attestation check
    shows Maester's EIDSCA.AF03 as `differs` with the why, and the report names the peer checks none covers."""
    doc = report_to_json(failing_report(), tenant_id="t", generated_at=WHEN)
    by_id = {c["id"]: c for c in doc["checks"]}
    for check_id, peers in PEERS.items():
        assert by_id[check_id]["peers"] == [p.to_json() for p in peers]
    af03 = next(p for p in by_id["PG-FIDO2-004"]["peers"] if p["id"] == "EIDSCA.AF03")
    assert af03["tool"] == "Maester" and af03["relation"] == "differs" and "Enforce attestation = No" in af03["note"]
    assert doc["peerChecks"]["notCovered"] == [u.to_json() for u in NOT_COVERED]
    assert set(doc["peerChecks"]["relations"]) == {"same", "stricter", "partial", "differs"}
    assert set(doc["peerChecks"]["sources"]) == {p.tool for peers in PEERS.values() for p in peers}


def _table_row(md: str, check_id: str) -> list[str]:
    row = next(line for line in md.splitlines() if line.startswith("| ") and f" {check_id} " in line)
    return [cell.strip() for cell in row.split(" | ")]


def test_report_markdown_shows_peer_ids_beside_ours_and_says_where_we_differ() -> None:
    """In the Markdown every check's row lists its peer ids beside our id (marked unless the same), the notes
    say `differs: why` for each deliberate difference, and the not-covered peer checks are named with a reason."""
    md = report_to_markdown(failing_report(), tenant_id="t", generated_at=WHEN)
    for check_id, peers in PEERS.items():
        cell = _table_row(md, check_id)[2]
        for p in peers:
            shown = p.label if p.relation == "same" else f"{p.label} ({p.relation})"
            assert shown in cell.split("<br>"), (check_id, shown, cell)
    assert "Maester EIDSCA.AF03 (differs)" in _table_row(md, "PG-FIDO2-004")[2]
    notes = md.split("## Peer checks", 1)[1]
    for check_id, peers in PEERS.items():
        for p in peers:
            if p.relation == "differs":
                assert f"- {check_id} vs {p.tool} `{p.id}`, differs: {p.note}" in notes
    assert "`EIDSCA.AF03`, differs: Maester expects isAttestationEnforced true" in notes
    for u in NOT_COVERED:
        assert f"{u.tool} `{u.id}`: not covered, because {u.because}" in notes
