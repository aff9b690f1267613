"""Everything the policy side shows people, in one place (pure: the caller passes the tenant id and the time).

- values and tables: `format_value` (AAGUIDs with their names), `human_value` (ids by name, CA keywords in
  words), `render_table` (fixed width, cells of several lines);
- the plan: `render_plan_table` (CLI) and `plan_to_markdown` (to paste into a ticket);
- the verification report: `report_to_json` (what the HTTP surface returns and the runs table keeps) and
  `report_to_markdown`, each check with the published peer checks it maps to (`shared/policy/peers.py`);
- a rollback: `render_rollback_table`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.ids import is_guid
from shared.policy.aaguids import label_of
from shared.policy.checks import Report
from shared.policy.peers import NOT_COVERED, RELATIONS, SOURCES, PeerCheck
from shared.policy.plan_model import AREA_CA, ChangeRow, Plan
from shared.policy.rollback_plan import RollbackPlan


def format_value(value: Any, names: Mapping[str, str] | None = None) -> list[str]:
    """A value as display lines: lists one item per line, AAGUIDs with their names beside them."""
    if value is None:
        return ["(none)"]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, list | tuple):
        if not value:
            return ["(empty)"]
        return [line for item in value for line in format_value(item, names)]
    if isinstance(value, str):
        return [label_of(value, names) if is_guid(value) else value]
    if isinstance(value, dict):
        return [json.dumps(value, sort_keys=True)]
    return [str(value)]


#: CA keywords in words, by what the field lists.
USER_WORDS = {"all": "All users", "guestsorexternalusers": "Guests or external users", "none": "No users"}
APP_WORDS = {"all": "All cloud apps", "office365": "Office 365", "microsoftadminportals": "Microsoft Admin Portals",
             "none": "No cloud apps"}


def human_value(plan: Plan, change: ChangeRow, value: Any) -> list[str]:
    """A change's before or after as people read it: ids by name, CA keywords in words, no placeholder.

    The row keeps the ids (machines and the stored plan use them); only the display is translated.
    """
    words = (APP_WORDS if change.field.endswith("Applications") else
             USER_WORDS if change.field.endswith("Users") and change.area == AREA_CA else {})

    def one(item: Any) -> Any:
        if not isinstance(item, str):
            return item
        if item.lower() in words:
            return words[item.lower()]
        return plan.labels.get(item.lower(), item)

    shown = [one(v) for v in value] if isinstance(value, list | tuple) else one(value)
    return format_value(shown, plan.aaguid_names)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[list[str]]]) -> str:
    """A fixed-width text table; each cell is a list of lines, so one row may span several lines."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], *(len(line) for line in cell)) if cell else widths[i]
    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])]
    for row in rows:
        height = max((len(c) for c in row), default=1)
        for n in range(height):
            out.append(line([c[n] if n < len(c) else "" for c in row]))
    return "\n".join(out)


def render_plan_table(plan: Plan) -> str:
    """The plan for people: a fixed-width table of changes, then errors, warnings, narrowing, lockout."""
    names = plan.aaguid_names
    parts: list[str] = []
    head = f"Plan ({plan.mode} mode"
    if plan.profile:
        head += f", passkey profile {plan.profile.get('name') or plan.profile.get('id')}"
    head += f"): {len(plan.changes)} change(s), {len(plan.writes)} write(s)"
    parts.append(head)
    if plan.changes:
        rows = [[[c.area], [c.field], human_value(plan, c, c.before), human_value(plan, c, c.after),
                 [c.note] if c.note else [""]] for c in plan.changes]
        parts.append(render_table(["AREA", "FIELD", "BEFORE", "AFTER", "NOTE"], rows))
    else:
        parts.append("No changes: the tenant matches the desired state.")
    for title, issues in (("ERRORS (the plan cannot be applied)", plan.errors), ("WARNINGS", plan.warnings)):
        if issues:
            parts.append(title + ":\n" + "\n".join(f"  - [{i.code}] {i.message}" for i in issues))
    if plan.narrowing:
        parts.append("NARROWING (what shrinks):\n" + "\n".join(
            f"  - [{n.kind}] {n.detail}" + ("" if n.evaluable else " (impact cannot be evaluated)")
            for n in plan.narrowing))
    if plan.lockout_evaluated:
        if plan.lockout:
            rows = [[[r.upn or r.user_id], [r.passkey_id or ""], [label_of(r.aaguid, names) if r.aaguid else ""],
                     [r.model or ""], [r.scope]] for r in plan.lockout]
            parts.append(f"LOCKOUT: {len(plan.lockout)} registered passkey(s) would stop working:\n"
                         + render_table(["USER", "PASSKEY", "AAGUID", "MODEL", "SCOPE"], rows))
        else:
            parts.append("LOCKOUT: no registered passkey would stop working.")
    elif plan.needs_lockout_evaluation:
        parts.append("LOCKOUT: not evaluated yet.")
    if plan.blocked:
        parts.append("This plan cannot be applied until the errors above are fixed; accepting it would not help.")
    elif plan.requires_acceptance:
        parts.append("This plan requires explicit acceptance before it is applied.")
    if plan.unexcluded_ca:
        parts.append("NO EMERGENCY ACCESS: enforced Conditional Access polic(ies) excluding no emergency-access "
                     f"account or group: {', '.join(plan.unexcluded_ca)}. Applying needs a separate acceptance.")
    return "\n\n".join(parts) + "\n"


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
             "rationale": report.check(r.id).rationale, "remediation": report.check(r.id).remediation,
             "peers": [p.to_json() for p in report.check(r.id).peers]}
            for r in report.results
        ],
        "peerChecks": {"relations": dict(RELATIONS), "sources": dict(SOURCES),
                       "notCovered": [u.to_json() for u in NOT_COVERED]},
    }


def _peer_tag(peer: PeerCheck) -> str:
    """A peer in the checks table: `Tool ID`, with the relation unless it is the same check."""
    return peer.label if peer.relation == "same" else f"{peer.label} ({peer.relation})"


def _peer_section(report: Report) -> list[str]:
    """The Markdown section on peer checks: what the relations mean, where the checks come from, every
    mapping with a note (each `differs` says why), and the published checks none of ours covers."""
    out = ["", "## Peer checks", "",
           "Published checks administrators already run, beside ours in the table above. Relations:", ""]
    out += [f"- {name}: {meaning}" for name, meaning in RELATIONS.items()]
    out += ["", "Sources:", ""] + [f"- {tool}: {source}" for tool, source in SOURCES.items()]
    noted = [(c.id, p) for c in report.checks for p in c.peers if p.note]
    if noted:
        out += ["", "### Notes", ""]
        out += [f"- {cid} vs {p.tool} `{p.id}`, {p.relation}: {p.note}" for cid, p in noted]
    if NOT_COVERED:
        out += ["", "### Not covered", ""]
        out += [f"- {u.tool} `{u.id}`: not covered, because {u.because}" for u in NOT_COVERED]
    return out


def report_to_markdown(report: Report, *, tenant_id: str, generated_at: datetime | str) -> str:
    """The verification report as Markdown for a ticket: header, summary, checks table with the peer checks
    beside ours, remediation, then the peer checks' notes (where we differ, and why)."""
    out = [
        "# Passkey Guard verification report",
        "",
        f"- Tenant: `{tenant_id}`",
        f"- Generated: {_when(generated_at)}",
        "",
        f"**{_summary(report)}**",
        "",
        _md_table(["Status", "Check", "Peer checks", "Title", "Reason"],
                  [[STATUS_MARKERS[r.status], r.id, "\n".join(_peer_tag(p) for p in report.check(r.id).peers),
                    report.check(r.id).title, r.reason] for r in report.results]),
    ]
    failed = report.failed
    if failed:
        out += ["", "## Remediation", ""]
        for r in failed:
            c = report.check(r.id)
            out.append(f"- **{r.id}** {c.title}: {c.remediation}")
    out += _peer_section(report)
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


def render_rollback_table(made: RollbackPlan, run_id: str) -> str:
    """What the rollback changes (AREA, OBJECT, FIELD, BEFORE, AFTER), then what it keeps and why."""
    names = made.plan.aaguid_names
    parts = [f"Rollback of run {run_id}: {len(made.changed)} change(s), {len(made.plan.writes)} write(s), "
             f"{len(made.kept)} object(s) kept"]
    if made.changed:
        rows = [[[r.area], [r.object], [r.field], format_value(r.before, names), format_value(r.after, names)]
                for r in made.changed]
        parts.append(render_table(["AREA", "OBJECT", "FIELD", "BEFORE", "AFTER"], rows))
    elif not made.kept:
        parts.append("Nothing to roll back: everything the run changed is already as it was before the run.")
    if made.kept:
        parts.append("KEPT (changed since the run, or still needed; not rolled back):\n" + "\n".join(
            f"  - [{k.area}] {k.object}: {k.reason}" for k in made.kept))
    for title, issues in (("WARNINGS", made.plan.warnings),):
        if issues:
            parts.append(title + ":\n" + "\n".join(f"  - [{i.code}] {i.message}" for i in issues))
    if made.plan.narrowing:
        parts.append("NARROWING (what shrinks):\n" + "\n".join(
            f"  - [{n.kind}] {n.detail}" + ("" if n.evaluable else " (impact cannot be evaluated)")
            for n in made.plan.narrowing))
    return "\n\n".join(parts) + "\n"
