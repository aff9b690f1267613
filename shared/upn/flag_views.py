"""How flags are shown to people: `GET /api/flags` (a page of flags, camelCase, no storage bookkeeping)
and the helpdesk's CSV export, every cell defused against spreadsheet formulas."""
from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

from shared.errors import InputError
from shared.services import Services
from shared.upn.clock import iso as _iso
from shared.upn.flag import FlagStatus, flag_to_dict

if TYPE_CHECKING:
    from shared.state import StoredFlag

FLAG_STATUSES = tuple(s.value for s in FlagStatus)
CSV_COLUMNS = ("userId", "oldUpn", "newUpn", "status", "detectedAt", "statusChangedAt", "source", "ticketId",
               "passkeyCount", "passkeyDetails", "passkeys")


def public_flag(stored: StoredFlag) -> dict[str, Any]:
    """A stored flag as the API shows it: the flag's camelCase fields (`flag_to_dict`; empty ones left out,
    as the table leaves them out; ``passkeyDetails`` always, ``pending`` or ``complete``) and, in ISO 8601,
    when its row was created and last written."""
    out = {k: v for k, v in flag_to_dict(stored.flag).items() if v is not None}
    for when, shown in ((stored.created_at, "createdAt"), (stored.updated_at, "updatedAt")):
        if when is not None:
            out[shown] = _iso(when)
    return out


async def list_flags(services: Services, *, status: str | None, limit: int = 100,
                     page_token: str | None = None) -> dict[str, Any]:
    """One page of flags (optionally of one status) as the API shows them, with the next page's token."""
    if status is not None and status not in FLAG_STATUSES:
        raise InputError(f"status must be one of {', '.join(FLAG_STATUSES)}")
    flags, token = await services.store.flags.page(status=status, limit=limit,
                                                   page_token=page_token)
    return {"value": [public_flag(f) for f in flags], "nextPageToken": token}


#: A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV Injection").
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """One export cell as text, defused: user-chosen text (passkey names, UPNs, ticket ids) that starts
    with a formula trigger gets a leading single quote, so a spreadsheet shows it instead of running it."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


async def flags_csv(services: Services, *, status: str | None) -> str:
    """Every flag (optionally of one status) as CSV for the helpdesk, AAGUIDs named where known;
    ``passkeyDetails`` says whether ``passkeyCount`` and ``passkeys`` are complete or still to be read."""
    from shared.policy.aaguids import name_of

    if status is not None and status not in FLAG_STATUSES:
        raise InputError(f"status must be one of {', '.join(FLAG_STATUSES)}")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    async for stored in services.store.flags.every(status):
        doc = flag_to_dict(stored.flag)
        keys = "; ".join(f"{p.get('displayName') or p.get('model') or 'passkey'} "
                         f"({name_of(p.get('aaGuid') or '') if p.get('aaGuid') else 'unknown'})"
                         for p in doc.get("passkeys", []))
        writer.writerow([csv_cell(cell) for cell in (
            doc.get("userId"), doc.get("oldUpn"), doc.get("newUpn"), doc.get("status"), doc.get("detectedAt"),
            doc.get("statusChangedAt"), doc.get("source"), doc.get("ticketId") or "", len(doc.get("passkeys", [])),
            doc.get("passkeyDetails"), keys)])
    return out.getvalue()
