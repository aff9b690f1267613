"""Reports for people and machines: the verification report as JSON and as Markdown (to paste into a
ticket), and a plan as Markdown. Pure: the caller passes the tenant id and the time."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.policy.aaguids import label_of
from shared.policy.checks import Report
from shared.policy.plan import Plan, human_value

STATUS_MARKERS = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}


def _when(generated_at: datetime | str) -> str:
    if isinstance(generated_at, str):
        return generated_at
    if generated_at.tzinfo is None:
        generated_at = generated_at.replace(tzinfo=UTC)
    return generated_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _cell(text: str) -> str:
    """Markdown table cell: pipes escaped, line breaks as <br>."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _summary(report: Report) -> str:
    n = report.counts()
    verdict = "COMPLIANT" if report.passed else "NOT COMPLIANT"
    return f"{verdict}: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped"


def report_to_json(report: Report, *, tenant_id: str, generated_at: datetime | str) -> dict[str, Any]:
    """The verification report as JSON-ready data (what the HTTP surface returns and the runs table keeps)."""
    return {
        "tenantId": tenant_id,
        "generatedAt": _when(generated_at),
        "passed": report.passed,
        "summary": {**report.counts(), "total": len(report.results), "text": _summary(report)},
        "checks": [
            {"id": r.id, "title": report.check(r.id).title, "status": r.status, "reason": r.reason,
             "rationale": report.check(r.id).rationale, "remediation": report.check(r.id).remediation}
            for r in report.results
        ],
    }


def report_to_markdown(report: Report, *, tenant_id: str, generated_at: datetime | str) -> str:
    """The verification report as Markdown for a ticket: header, summary, checks table, remediation."""
    out = [
        "# Passkey Guard verification report",
        "",
        f"- Tenant: `{tenant_id}`",
        f"- Generated: {_when(generated_at)}",
        "",
        f"**{_summary(report)}**",
        "",
        _md_table(["Status", "Check", "Title", "Reason"],
                  [[STATUS_MARKERS[r.status], r.id, report.check(r.id).title, r.reason] for r in report.results]),
    ]
    failed = report.failed
    if failed:
        out += ["", "## Remediation", ""]
        for r in failed:
            c = report.check(r.id)
            out.append(f"- **{r.id}** {c.title}: {c.remediation}")
    return "\n".join(out) + "\n"


def plan_to_markdown(plan: Plan, *, tenant_id: str | None = None, generated_at: datetime | str | None = None,
                     plan_id: str | None = None) -> str:
    """A plan as Markdown: changes table (AAGUIDs with names), errors, warnings, narrowing, lockout."""
    names: Mapping[str, str] = plan.aaguid_names
    out = ["# Passkey Guard plan", ""]
    if plan_id:
        out.append(f"- Plan: `{plan_id}`")
    if tenant_id:
        out.append(f"- Tenant: `{tenant_id}`")
    if generated_at is not None:
        out.append(f"- Generated: {_when(generated_at)}")
    mode = plan.mode + (f" (passkey profile {plan.profile.get('name') or plan.profile.get('id')})"
                        if plan.profile else "")
    out += [f"- Mode: {mode}", f"- State hash: `{plan.state_hash}`", ""]
    if plan.blocked:
        verdict = "BLOCKED: fix the errors below before applying"
    elif plan.empty:
        verdict = "NO CHANGES: the tenant matches the desired state"
    else:
        verdict = f"{len(plan.changes)} change(s) in {len(plan.writes)} write(s)"
        if plan.requires_acceptance:
            verdict += "; requires acceptance"
    out += [f"**{verdict}**", ""]
    if plan.changes:
        out += ["## Changes", "",
                _md_table(["Area", "Field", "Before", "After", "Note"],
                          [[c.area, c.field, "\n".join(human_value(plan, c, c.before)),
                            "\n".join(human_value(plan, c, c.after)), c.note] for c in plan.changes]), ""]
    if plan.errors:
        out += ["## Errors", ""] + [f"- `{i.code}` {i.message}" for i in plan.errors] + [""]
    if plan.warnings:
        out += ["## Warnings", ""] + [f"- `{i.code}` {i.message}" for i in plan.warnings] + [""]
    if plan.narrowing:
        out += ["## What shrinks", ""] + [
            f"- `{n.kind}` {n.detail}" + ("" if n.evaluable else " (impact cannot be evaluated)")
            for n in plan.narrowing] + [""]
    if plan.lockout_evaluated:
        out += ["## Lockout", ""]
        if plan.lockout:
            out += [f"{len(plan.lockout)} registered passkey(s) would stop working:", "",
                    _md_table(["User", "Passkey", "AAGUID", "Model", "Scope"],
                              [[r.upn or r.user_id, r.passkey_id or "", label_of(r.aaguid, names) if r.aaguid else "",
                                r.model or "", r.scope] for r in plan.lockout]), ""]
        else:
            out += ["No registered passkey would stop working.", ""]
    elif plan.needs_lockout_evaluation:
        out += ["## Lockout", "", "Not evaluated yet.", ""]
    return "\n".join(out).rstrip("\n") + "\n"
