"""Users' current UPNs: many ids at once through `$batch`, or one user by id or UPN.

The UPN side reads only `id` and `userPrincipalName`; both reads select just those, so a user costs one
RU and no profile data passes through the product.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

from shared.errors import GraphError
from shared.graph.gateway import GraphGateway
from shared.graph.passkeys import raise_if_throttled

SELECT = "$select=id,userPrincipalName"


def user_path(user_id: str) -> str:
    """The path of one user by object id, with the UPN side's `$select`."""
    return f"/users/{user_id}?{SELECT}"


def user_by_upn_path(upn: str) -> str:
    """The path of one user by UPN: an OData key literal (`'` doubled), then percent-encoded, as a UPN
    may hold `#` (Entra allows `' # ^ ~ !`)."""
    key = quote(upn.replace("'", "''"), safe="@'!^~")
    return f"/users('{key}')?{SELECT}"


async def current_upns(graph: GraphGateway, user_ids: list[str]) -> dict[str, str | None]:
    """Current UPN per user id (None: the user no longer exists), 20 per `$batch` at the tenant's pace.

    Items still throttled after the gateway's retries raise GraphThrottled; any other failure GraphError."""
    if not user_ids:
        return {}
    answers = await graph.batch_get({uid: user_path(uid) for uid in user_ids})
    raise_if_throttled(answers)
    out: dict[str, str | None] = {}
    for uid, answer in answers.items():
        if answer.status == 200 and isinstance(answer.body, dict):
            out[uid] = answer.body.get("userPrincipalName")
        elif answer.status == 404:
            out[uid] = None
        else:
            raise GraphError(f"reading user {uid} failed with {answer.status}", status_code=answer.status)
    return out


async def user_by_upn(graph: GraphGateway, upn: str, *, what: str = "find a user by UPN") -> dict[str, Any]:
    """One user's `{id, userPrincipalName}` by UPN; NotFound when the tenant has no such user."""
    return await graph.get_json(user_by_upn_path(upn), what=what)


#: The count of every user, from Graph's advanced queries (`$count` needs `ConsistencyLevel: eventual`); one
#: user selected by id only, so the answer is small and costs 1 RU (platform-limits.md: 2, -1 for `$select`).
COUNT_PATH = "/users?$count=true&$top=1&$select=id"
COUNT_RU = 1


async def count_users(graph: GraphGateway) -> int:
    """How many users the tenant has, from Graph's eventually consistent index: it may lag a little behind
    the directory, so it serves an estimate (a sweep's progress), never a decision."""
    page = await graph.get_json(COUNT_PATH, headers={"ConsistencyLevel": "eventual"}, what="count users",
                                ru=COUNT_RU)
    count = page.get("@odata.count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise GraphError("Graph answered the count of users without a number")
    return count
