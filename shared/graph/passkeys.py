"""Users' registered passkeys in bulk: the one read both the lockout check and the UPN processor need."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.errors import GraphError, GraphThrottled
from shared.graph.gateway import BatchItem, GraphGateway


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
    answers = await graph.batch_get({uid: f"/users/{uid}/authentication/fido2Methods" for uid in user_ids})
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
