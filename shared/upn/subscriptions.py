"""The /users change-notification subscription: created, renewed well before expiry, replaced when Graph
lost it or NOTIFICATION_CLIENT_STATE changed, and Graph's lifecycle events carried out. The subscription's
state lives in the `subscription` checkpoint (id, expiry, change types, a keyed fingerprint of the
clientState); Graph writes happen under the `subscription` lease.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from shared.errors import ConflictError, NotFound
from shared.graph.subscriptions import (
    create_subscription,
    delete_subscription,
    reauthorize_subscription,
    renew_subscription,
)
from shared.services import Services
from shared.upn.clock import iso as _iso
from shared.upn.clock import now as _now
from shared.upn.sweep import sweep

log = logging.getLogger(__name__)

SUBSCRIPTION_CHECKPOINT = "subscription"
SUBSCRIPTION_RESOURCE = "users"
SUBSCRIPTION_MAX_MINUTES = 41_760  # users: < 29 days
SUBSCRIPTION_RENEW_WITHIN = timedelta(days=14)
SUBSCRIPTION_CHANGE_TYPE = "updated,deleted"  # deleted: a permanent deletion is heard too
SUBSCRIPTION_LEASE = "subscription"  # held while creating, renewing or replacing the subscription
SUBSCRIPTION_LEASE_SECONDS = 120


async def ensure_subscription(services: Services, *, now: datetime | None = None) -> dict[str, Any]:
    """Create the /users subscription, renew it well before it expires, recreate it when Graph lost it or
    when NOTIFICATION_CLIENT_STATE changed since it was created.

    An unusable clientState (unset, short, a placeholder, an unresolved Key Vault reference) is refused with
    SecretUnavailable before any Graph call: registering it would let anyone forge our notifications. A fresh
    subscription costs one Table read; any Graph write happens under a lease, so instances starting together
    create one subscription (the others get ConflictError and leave it to the holder).
    """
    tenant = services.settings.tenant_id
    now = now or _now()
    fingerprint = client_state_fingerprint(tenant, services.settings.secret("notification_client_state"))
    await services.graph.confirm_tenant()  # the right tenant before any storage read or write (wrongTenant)
    value, _ = await services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
    if _is_fresh(value, fingerprint, now):
        return {"action": "none", **(value or {})}
    owner = uuid.uuid4().hex
    if not await services.store.checkpoints.acquire_lease(SUBSCRIPTION_LEASE, owner, SUBSCRIPTION_LEASE_SECONDS):
        raise ConflictError("another instance is creating or renewing the subscription right now")
    try:
        return await _ensure_subscription_leased(services, fingerprint, now)
    finally:
        await services.store.checkpoints.release_lease(SUBSCRIPTION_LEASE, owner)


def client_state_fingerprint(tenant_id: str, client_state: str) -> str:
    """A keyed hash of the clientState, stored with the subscription so a rotation is noticed without the
    value ever being stored."""
    key = f"passkey-guard/clientState/{tenant_id}".encode()
    return hmac.new(key, client_state.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def _replacement_reason(value: Mapping[str, Any] | None, fingerprint: str) -> str | None:
    """Why the stored subscription must be replaced rather than renewed, or None."""
    if not value or not value.get("id"):
        return None
    if value.get("removed"):
        return "was removed by Graph"
    if value.get("clientStateFingerprint") != fingerprint:
        return "was made with another clientState"
    if value.get("changeType") != SUBSCRIPTION_CHANGE_TYPE:
        return f"does not ask for {SUBSCRIPTION_CHANGE_TYPE}"
    return None


def _is_fresh(value: Mapping[str, Any] | None, fingerprint: str, now: datetime) -> bool:
    """The stored subscription is the one we would make (clientState, change types) and far from expiry."""
    if not value or not value.get("id") or _replacement_reason(value, fingerprint):
        return False
    return datetime.fromisoformat(value["expirationDateTime"]) - now > SUBSCRIPTION_RENEW_WITHIN


async def _ensure_subscription_leased(services: Services, fingerprint: str, now: datetime) -> dict[str, Any]:
    """ensure_subscription's Graph work, under the subscription lease (the checkpoint is read again)."""
    value, etag = await services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
    if _is_fresh(value, fingerprint, now):
        return {"action": "none", **(value or {})}  # another instance did it just before us
    action = "created"
    reason = _replacement_reason(value, fingerprint)
    if value and value.get("id") and reason:
        log.warning("subscription %s %s; replacing it", value["id"], reason)
        # The checkpoint keeps its id until the new one exists (Graph refuses a second subscription for the
        # same resource and URL, so the old one goes first).
        await delete_subscription(services.graph, value["id"], why="of a rotated clientState")
        action = "recreated"
    elif value and value.get("id"):
        try:
            renewed = await _renew(services, value["id"], now)
            state = {**value, "expirationDateTime": renewed}
            await services.store.checkpoints.put(SUBSCRIPTION_CHECKPOINT, state, etag)
            return {"action": "renewed", **state}
        except NotFound:
            log.warning("subscription %s is gone; recreating it", value["id"])
    state = {**await _create_subscription(services, now), "clientStateFingerprint": fingerprint}
    await services.store.checkpoints.put(SUBSCRIPTION_CHECKPOINT, state)
    return {"action": action, **state}


def _expiry(now: datetime) -> datetime:
    return now + timedelta(minutes=SUBSCRIPTION_MAX_MINUTES - 5)


async def _create_subscription(services: Services, now: datetime) -> dict[str, Any]:
    settings = services.settings
    created = await create_subscription(
        services.graph, resource=SUBSCRIPTION_RESOURCE, change_type=SUBSCRIPTION_CHANGE_TYPE,
        notification_url=settings.require("notification_url", "NOTIFICATION_URL"),
        lifecycle_notification_url=settings.lifecycle_notification_url,
        client_state=settings.secret("notification_client_state"), expiration=_expiry(now))
    expiry = created.expiration or _expiry(now)
    return {"id": created.id, "expirationDateTime": expiry.isoformat(), "createdAt": _iso(now),
            "changeType": SUBSCRIPTION_CHANGE_TYPE}


async def _renew(services: Services, subscription_id: str, now: datetime) -> str:
    expiry = _expiry(now)
    await renew_subscription(services.graph, subscription_id, expiry)
    return expiry.isoformat()


async def _mark_removed(services: Services) -> None:
    """Note that Graph removed the stored subscription, keeping its id until a new one replaces it: if the
    re-creation fails, the redelivered lifecycle message still names the stored id and is retried."""
    value, etag = await services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
    if value:
        await services.store.checkpoints.put(SUBSCRIPTION_CHECKPOINT, {**value, "removed": True}, etag)


async def handle_lifecycle(services: Services, event: str, subscription_id: str | None) -> dict[str, Any]:
    """reauthorizationRequired: reauthorize and renew; subscriptionRemoved: recreate; missed: sweep.

    Only for the subscription we stored: an event naming any other id (an old subscription, another app's,
    or a forgery that knew the clientState) changes nothing and is logged."""
    stored = (await services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT))[0] or {}
    if not subscription_id or str(subscription_id).lower() != str(stored.get("id") or "").lower():
        log.warning("lifecycle event %s names subscription %s, not the stored one (%s): nothing done", event,
                    subscription_id, stored.get("id"))
        return {"event": event, "action": "ignored", "reason": "not the stored subscription"}
    if event == "reauthorizationRequired" and subscription_id:
        try:
            await reauthorize_subscription(services.graph, subscription_id)
            expiry = await _renew(services, subscription_id, _now())
        except NotFound:
            await _mark_removed(services)
            return {"event": event, **(await ensure_subscription(services))}
        value, etag = await services.store.checkpoints.get(SUBSCRIPTION_CHECKPOINT)
        if value and value.get("id") == subscription_id:
            await services.store.checkpoints.put(SUBSCRIPTION_CHECKPOINT,
                                                {**value, "expirationDateTime": expiry}, etag)
        return {"event": event, "action": "reauthorized", "expirationDateTime": expiry}
    if event == "subscriptionRemoved":
        await _mark_removed(services)
        return {"event": event, **(await ensure_subscription(services))}
    if event == "missed":
        return {"event": event, **(await sweep(services, trigger="lifecycle"))}
    log.info("lifecycle event %s needs no action", event)
    return {"event": event, "action": "none"}
