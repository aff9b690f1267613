"""Who holds a passkey, at once: Graph's authentication-methods registration report
(`/reports/authenticationMethods/userRegistrationDetails`) filtered on `methodsRegistered`.

One report page lists up to a hundred or so users, where the per-user read (`fido2Methods`) meets a per-tenant
limit of a few calls a second; the report is a snapshot Graph refreshes on its own schedule
(`lastUpdatedDateTime` on each row says when), so it tells who held a passkey then, not now. The UPN side
keeps it as the holders index (`shared/upn/holders.py`) and still reads `fido2Methods` for the details.

Graph's rules, from its documentation of the report: `$filter` and `$orderby` only (no `$select`, `$top` or
`$count`), paged by `@odata.nextLink`; `AuditLog.Read.All` (application), else 403 (a tenant without the
Entra ID P1/P2 licence the report needs answers 403 too); reports that list authentication methods are
limited to 5 requests per 10 s per app and tenant, with a 429 and `Retry-After` beyond. The gateway's
`reports_pace` keeps to that limit; these reads spend nothing from the RU pace, whose bucket they are not
metered in. Rows are parsed as raw JSON, and only `id` and `lastUpdatedDateTime` are kept.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shared.errors import GraphError, GraphThrottled, MissingGraphPermission
from shared.graph.gateway import GraphGateway

log = logging.getLogger(__name__)

REPORT_PATH = "/reports/authenticationMethods/userRegistrationDetails"
REPORT_PERMISSION = "AuditLog.Read.All"
#: The report's `methodsRegistered` names that mean a FIDO2 method (a passkey) the user registered. Graph's
#: current names: `passKeyDeviceBound` (a security key or other device-bound passkey),
#: `passKeyDeviceBoundAuthenticator` (in Microsoft Authenticator), `passKeyDeviceBoundWindowsHello` (in
#: Windows Hello), `passKeySynced`; and the older `fido2` and `fido2SecurityKey`, which older tenants'
#: rows and Graph's own examples still show. Filtering on a name no row holds costs nothing; leaving one out
#: would hide its holders, so every name is kept.
PASSKEY_METHODS: tuple[str, ...] = ("passKeyDeviceBound", "passKeyDeviceBoundAuthenticator",
                                    "passKeyDeviceBoundWindowsHello", "passKeySynced", "fido2SecurityKey", "fido2")
#: One report read still refused after the SDK's own retries is sent again this many times (after each
#: `Retry-After`) before the read gives up with GraphThrottled.
THROTTLED_ATTEMPTS = 5


def holders_filter() -> str:
    """The `$filter` that lists the users who registered any kind of passkey."""
    return " or ".join(f"methodsRegistered/any(m: m eq '{name}')" for name in PASSKEY_METHODS)


#: The first page of the holders' rows.
HOLDERS_PATH = f"{REPORT_PATH}?$filter={quote(holders_filter())}"


@dataclass(frozen=True)
class HolderReport:
    """The report's passkey holders: their user ids (lowercase), when Graph last refreshed the report
    (the rows' latest `lastUpdatedDateTime`; None when no row), and how many pages were read."""

    ids: frozenset[str]
    refreshed_at: dt.datetime | None
    pages: int


def _stamp(row: dict[str, Any]) -> dt.datetime | None:
    """A row's `lastUpdatedDateTime` as an aware UTC datetime (Graph writes up to 7 fractional digits)."""
    value = row.get("lastUpdatedDateTime")
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        log.warning("a registration report row has an unreadable lastUpdatedDateTime; ignored")
        return None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def _latest(current: dt.datetime | None, row: dict[str, Any]) -> dt.datetime | None:
    stamp = _stamp(row)
    if stamp is None:
        return current
    return stamp if current is None or stamp > current else current


async def _page(graph: GraphGateway, url: str) -> dict[str, Any]:
    """One page of the report at the reports limit. A 429 the SDK's retries (which honour `Retry-After`) did
    not get past holds the reports pace for its `Retry-After` and is sent again; a 403 is MissingGraphPermission."""
    for attempt in range(THROTTLED_ATTEMPTS + 1):
        await graph.reports_pace.take()
        try:
            return await graph.get_json(url, what="read the authentication-methods registration report")
        except GraphThrottled as exc:
            if attempt == THROTTLED_ATTEMPTS:
                raise
            log.info("the registration report is throttled; reading again after %s s", exc.retry_after)
            graph.reports_pace.pause(exc.retry_after or 1.0)
        except GraphError as exc:
            if exc.status_code == 403:
                raise MissingGraphPermission(
                    f"Graph refused the authentication-methods registration report ({exc.graph_code or 'no code'}):"
                    f" the app needs the {REPORT_PERMISSION} application permission (and the tenant an Entra ID "
                    "P1 or P2 licence)", detail={"missingRoles": [REPORT_PERMISSION]}) from exc
            raise
    raise AssertionError("unreachable")


async def read_passkey_holders(graph: GraphGateway, *,
                               on_page: Callable[[int, int], Any] | None = None) -> HolderReport:
    """Every passkey holder the report lists, through all its pages. `on_page(rows so far, pages)` after each
    page (progress). Raises MissingGraphPermission without AuditLog.Read.All, GraphThrottled when Graph kept
    refusing, GraphError otherwise."""
    ids: set[str] = set()
    refreshed: dt.datetime | None = None
    pages = rows = 0
    url: str | None = HOLDERS_PATH
    while url:
        page = await _page(graph, url)
        pages += 1
        for row in page.get("value") or []:
            if isinstance(row, dict) and isinstance(row.get("id"), str) and row["id"]:
                ids.add(row["id"].lower())
                refreshed = _latest(refreshed, row)
                rows += 1
        if on_page is not None:
            on_page(rows, pages)
        url = page.get("@odata.nextLink")
    return HolderReport(ids=frozenset(ids), refreshed_at=refreshed, pages=pages)


async def report_refreshed_at(graph: GraphGateway) -> dt.datetime | None:
    """When Graph last refreshed the report, from the first page of the holders' rows (one request); None when
    it lists nobody. Tells whether the report changed since the holders index was read."""
    refreshed: dt.datetime | None = None
    for row in (await _page(graph, HOLDERS_PATH)).get("value") or []:
        if isinstance(row, dict):
            refreshed = _latest(refreshed, row)
    return refreshed
