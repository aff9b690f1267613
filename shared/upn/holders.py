"""Refresh the holders index (`shared/state/holders.py`) from Graph's registration report.

Flag fast, enrich slowly: a mass rename asks the index who holds a passkey (one table read per grouped row)
instead of waiting on one `fido2Methods` read per user under the tenant's limit on those reads; the reads
then fill in each flag's passkeys. The report is a snapshot Graph refreshes on its own schedule, so the index
only changes when the report did: while the report's refresh time is the one the index was read from, a
refresh costs one request. A registration after the report's refresh is not in the index until the next one.

Without AuditLog.Read.All (or the report's licence) Graph answers 403: the refresh is skipped with a warning
and the product works without the index, as slowly as before and missing nothing.
"""
from __future__ import annotations

import logging
from typing import Any

from shared.errors import MissingGraphPermission
from shared.graph.registrations import read_passkey_holders, report_refreshed_at
from shared.services import Services
from shared.upn.clock import iso
from shared.upn.clock import now as _now

log = logging.getLogger(__name__)

NOT_GRANTED = "AuditLog.Read.All not granted"


async def refresh_holders(services: Services, *, force: bool = False) -> dict[str, Any]:
    """Bring the holders index up to the report: `{"current": True, ...}` when the report has not been
    refreshed since the index was read (one request), else the report read whole and the index replaced
    (`{"current": False, "added", "removed", "count", "pages", "reportRefreshedAt"}`); `force` reads it anyway.
    `{"skipped": ...}` when Graph refuses the report (403); never raises for that."""
    index = services.store.holders
    try:
        meta = await index.meta()
        if meta is not None and not force:
            refreshed = await report_refreshed_at(services.graph)
            if refreshed == meta.report_refreshed_at:
                return {"current": True, "count": meta.count, "readAt": iso(meta.read_at),
                        "reportRefreshedAt": None if refreshed is None else iso(refreshed)}
        read_at = _now()
        report = await read_passkey_holders(services.graph)
    except MissingGraphPermission as exc:
        log.warning("the holders index is not refreshed: %s; UPN changes are flagged without it (slower, "
                    "nothing missed)", exc.message)
        return {"skipped": NOT_GRANTED}
    counts = await index.replace(set(report.ids), report_refreshed_at=report.refreshed_at, read_at=read_at)
    log.info("holders index refreshed: %s holders (%s added, %s removed) from %s report pages", counts["count"],
             counts["added"], counts["removed"], report.pages)
    return {"current": False, **counts, "pages": report.pages,
            "reportRefreshedAt": None if report.refreshed_at is None else iso(report.refreshed_at)}
