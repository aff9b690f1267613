"""The ticketing system's events, carried out inline (one user, so within the webhook's time) and once
per event id: `upn_changed` tells us a user's old UPN, `recheck_user` re-reads a user and runs the tracker
on their flag now, `verify_policy` runs a policy verification. The event's signature and timestamp are
checked before (`ticket_webhook.verify_ticket`)."""
from __future__ import annotations

from typing import Any

from shared.errors import InputError, NotFound
from shared.graph.users import user_by_upn
from shared.services import Services
from shared.upn.flag_views import public_flag
from shared.upn.processor import process_users
from shared.upn.tracker import track_flags_of

#: How long an event id is remembered: a ticketing system retrying a delivered event within it is answered
#: `duplicate` and nothing is done again.
TICKET_EVENT_TTL_SECONDS = 7 * 86400


async def ticket_action(services: Services, event: Any) -> dict[str, Any]:
    """Carry out one verified ticket event, once per event id: a repeated id answers `duplicate: true` and
    does nothing; an event whose action failed is forgotten, so the ticketing system's retry runs it."""
    tenant, key = services.settings.tenant_id, f"ticket:{event.event_id}"
    if not await services.store.claim_event(tenant, key, ttl_seconds=TICKET_EVENT_TTL_SECONDS):
        return {"eventId": event.event_id, "duplicate": True,
                "message": "this event id was already handled; nothing was done again"}
    try:
        result = await _carry_out(services, event)
    except Exception:
        await services.store.forget_event(tenant, key)  # let a retry work
        raise
    return {"eventId": event.event_id, "action": event.action, "duplicate": False, **result}


async def _carry_out(services: Services, event: Any) -> dict[str, Any]:
    """One verified ticket event inline (one user, so within the webhook's time)."""
    if event.action == "verify_policy":
        from shared.policy.verify import verify

        return {"report": await verify(services, trigger="ticket")}
    user_id = event.user_id
    if user_id is None:
        try:
            user = await user_by_upn(services.graph, event.user_principal_name, what="find the ticket's user")
        except NotFound:
            raise InputError(f"userPrincipalName: no user {event.user_principal_name} in the tenant") from None
        user_id = user["id"]
    source = "ticket" if event.action == "upn_changed" else "recheck"
    result = await process_users(services, [{"id": user_id}], source=source, ticket_id=event.ticket_id,
                                 old_upn_hint=event.old_upn)
    if result["removed"]:
        raise InputError(f"userId: user {user_id} does not exist in the tenant")
    if event.action == "recheck_user":
        await track_flags_of(services, [user_id])
    stored = await services.store.get_flag(services.settings.tenant_id, user_id.lower())
    return {"userId": user_id.lower(), "decision": next(iter(result["decisions"]), "none"),
            "flag": public_flag(stored) if stored else None}
