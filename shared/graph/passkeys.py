"""Users' registered passkeys (FIDO2 methods): the bulk read both the lockout check and the UPN processor
need, and the tracker's deletion of a user's pre-change passkeys."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.errors import GraphError, GraphThrottled, NotFound
from shared.graph.gateway import BatchItem, GraphGateway


def fido2_methods_path(user_id: str) -> str:
    """The path of one user's registered passkeys."""
    return f"/users/{user_id}/authentication/fido2Methods"


def raise_if_throttled(answers: Mapping[str, BatchItem]) -> None:
    """Items still throttled after the gateway's retries: GraphThrottled with the longest Retry-After."""
    throttled = [a for a in answers.values() if a.status == 429]
    if throttled:
        raise GraphThrottled(f"{len(throttled)} Graph reads still throttled",
                             retry_after=max(a.retry_after for a in throttled))


async def read_passkeys(graph: GraphGateway, user_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each user's `fido2Methods` as raw JSON, 20 per `$batch` at the tenant's pace; a missing user has none."""
    if not user_ids:
        return {}
    answers = await graph.batch_get({uid: fido2_methods_path(uid) for uid in user_ids}, pace=graph.auth_pace)
    raise_if_throttled(answers)
    out: dict[str, list[dict[str, Any]]] = {}
    for uid, answer in answers.items():
        if answer.status == 200 and isinstance(answer.body, dict):
            out[uid] = list(answer.body.get("value") or [])
        elif answer.status == 404:
            out[uid] = []
        else:
            raise GraphError(f"reading the passkeys of {uid} failed with {answer.status}", status_code=answer.status)
    return out


async def delete_passkeys(graph: GraphGateway, user_id: str, method_ids: list[str]) -> None:
    """Delete some of a user's passkeys, one request each; a passkey already gone counts as deleted.

    The app's permission to delete passkeys is checked first (MissingGraphPermission), so a missing role
    deletes nothing rather than failing half-way."""
    from shared.graph.permissions import require_write_roles

    await require_write_roles(graph, [{"op": "delete_passkey"}])
    methods = graph.client.users.by_user_id(user_id).authentication.fido2_methods
    for mid in method_ids:
        builder = methods.by_fido2_authentication_method_id(mid)
        try:
            await graph.call("DELETE", builder.delete, what="delete a pre-change passkey")
        except NotFound:
            pass  # already gone: that is what we wanted
