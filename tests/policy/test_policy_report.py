"""Verification reports as JSON and as Markdown for a ticket."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from shared.policy.checks import Report, build_check_context, run_checks
from shared.policy.render import report_to_json, report_to_markdown
from tests.policy.policy_factories import ANDROID, IOS, ONEPASSWORD, desired, legacy_fido2, strength

WHEN = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def failing_report() -> Report:
    """A report with failures (attestation on, iOS missing, an AAGUID vanished, strength unrestricted)."""
    state = desired(aaguidNames={ONEPASSWORD: "Team | vault"})
    ctx = build_check_context(state, legacy_fido2(attestation=True, aaguids=[ANDROID]), [strength()], None,
                              [ANDROID, IOS, ONEPASSWORD])
    return run_checks(ctx)


def test_report_json() -> None:
    """The JSON report has tenant, UTC time, verdict, counts and each check with its texts."""
    doc = report_to_json(failing_report(), tenant_id="tenant-1", generated_at=WHEN)
    json.dumps(doc)  # serialisable
    assert doc["tenantId"] == "tenant-1" and doc["generatedAt"] == "2026-05-01T12:00:00Z"
    assert doc["passed"] is False
    assert doc["summary"]["failed"] == len([c for c in doc["checks"] if c["status"] == "failed"]) > 0
    assert doc["summary"]["total"] == 13
    first = doc["checks"][0]
    assert set(first) == {"id", "title", "status", "reason", "rationale", "remediation"}


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
    assert table[0] == "| Status | Check | Title | Reason |"
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
