"""Pages of `users/delta`: the sweep's read of every user's UPN, then of the users changed since.

A page is read as raw JSON at low throttle priority (the sweep is a backstop and yields to interactive
work) and charged to the tenant's RU budget, so the processors' `$batch` reads keep to Graph's pace around
it. An expired delta token (410, `syncStateNotFound`, `resyncRequired`) is `DeltaExpired`: the caller
starts over from `DELTA_START` with a full re-read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from shared.errors import GraphError
from shared.graph.gateway import GraphGateway

#: Where a first read (and a full resync) starts: every user, only the fields the UPN side compares.
DELTA_START = "/users/delta?$select=id,userPrincipalName"
DELTA_PAGE_RU = 1  # users/delta with $select (platform-limits.md: 1-2 RU a page)
LOW_PRIORITY = {"x-ms-throttle-priority": "Low"}


class DeltaExpired(GraphError):
    """Graph no longer knows the delta token: the read must start over from `DELTA_START`."""


@dataclass(frozen=True)
class DeltaUser:
    """One user of a delta page: `upn` None when the page carries none; `deleted` for a permanent
    deletion (a soft deletion is restorable, so the page's user is left out)."""

    id: str
    upn: str | None = None
    deleted: bool = False


@dataclass(frozen=True)
class DeltaPage:
    """One page: its users, and either the link of the next page or (on the last page) the delta link."""

    users: list[DeltaUser] = field(default_factory=list)
    next_link: str | None = None
    delta_link: str | None = None


def _users(items: list[dict]) -> list[DeltaUser]:
    out: list[DeltaUser] = []
    for item in items:
        if "@removed" in item:
            if (item["@removed"] or {}).get("reason") == "deleted":
                out.append(DeltaUser(id=item["id"], deleted=True))
            continue  # soft-deleted ("changed"): restorable, so its case stays as it is
        out.append(DeltaUser(id=item["id"], upn=item.get("userPrincipalName") or None))
    return out


async def read_delta_page(graph: GraphGateway, link: str) -> DeltaPage:
    """Read one page of `users/delta` from `link` (`DELTA_START`, a next link or a delta link)."""
    try:
        page = await graph.get_json(link, headers=LOW_PRIORITY, what="read users/delta", ru=DELTA_PAGE_RU)
    except GraphError as exc:
        if exc.status_code == 410 or exc.graph_code in ("syncStateNotFound", "resyncRequired"):
            raise DeltaExpired(exc.message, status_code=exc.status_code, graph_code=exc.graph_code) from exc
        raise
    return DeltaPage(users=_users(page.get("value", [])), next_link=page.get("@odata.nextLink"),
                     delta_link=page.get("@odata.deltaLink"))
