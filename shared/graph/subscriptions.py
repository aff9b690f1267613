"""Graph change-notification subscriptions: create, renew, reauthorize and delete.

The only module that builds `subscriptions` requests. Bodies are the SDK's typed `Subscription`, built
fresh for each request. What to subscribe to, when to renew and when to replace is the use case's
(`shared/upn/subscriptions.py`); this module only says it to Graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.errors import GraphError, NotFound
from shared.graph.gateway import GraphGateway


@dataclass(frozen=True)
class CreatedSubscription:
    """What Graph answered to a creation: the id, and the expiry it granted (None when it sent none)."""

    id: str
    expiration: datetime | None


async def create_subscription(graph: GraphGateway, *, resource: str, change_type: str, notification_url: str,
                              lifecycle_notification_url: str | None, client_state: str,
                              expiration: datetime) -> CreatedSubscription:
    """Create a subscription; GraphError when Graph answers without an id."""
    from msgraph.generated.models.subscription import Subscription

    body = Subscription(change_type=change_type, resource=resource, notification_url=notification_url,
                        lifecycle_notification_url=lifecycle_notification_url, client_state=client_state,
                        expiration_date_time=expiration)
    created = await graph.call("POST", lambda: graph.client.subscriptions.post(body),
                               what=f"create the /{resource} subscription")
    if created is None or not created.id:
        raise GraphError("Graph created the subscription but returned no id")
    return CreatedSubscription(id=created.id, expiration=created.expiration_date_time)


async def renew_subscription(graph: GraphGateway, subscription_id: str, expiration: datetime) -> None:
    """Move a subscription's expiry to `expiration`; NotFound when Graph no longer has it."""
    from msgraph.generated.models.subscription import Subscription

    builder = graph.client.subscriptions.by_subscription_id(subscription_id)
    await graph.call("PATCH", lambda: builder.patch(Subscription(expiration_date_time=expiration)),
                     what="renew the subscription")


async def reauthorize_subscription(graph: GraphGateway, subscription_id: str) -> None:
    """Answer Graph's `reauthorizationRequired`; NotFound when Graph no longer has the subscription."""
    builder = graph.client.subscriptions.by_subscription_id(subscription_id)
    await graph.call("POST", builder.reauthorize.post, what="reauthorize the subscription")


async def delete_subscription(graph: GraphGateway, subscription_id: str, *, why: str) -> None:
    """Delete a subscription (`why` names the reason in an error message); one already gone counts as
    deleted."""
    builder = graph.client.subscriptions.by_subscription_id(subscription_id)
    try:
        await graph.call("DELETE", builder.delete, what=f"delete the subscription {why}")
    except NotFound:
        pass  # already gone: that is what we wanted
