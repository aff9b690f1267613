"""Graph user events delivered through Event Grid: a user change is queued for the processor, a
reauthorization becomes lifecycle work. Like the webhooks, the intake never calls Graph."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.services import Services
from shared.upn.event_grid_events import parse_event_grid_trigger
from shared.upn.intake import LifecycleEvent
from shared.upn.messages import enqueue_lifecycle, enqueue_notices


async def intake_event_grid(services: Services, *, event_id: str, subject: str | None, event_type: str,
                            data: Mapping[str, Any] | None, source: str | None = None,
                            cloud_event: bool = False) -> str:
    """One Event Grid event: a user change is queued, a reauthorization becomes lifecycle work.
    The values are those of `intake.event_grid_trigger_values` (a CloudEvent's source names the tenant)."""
    settings = services.settings  # a configured clientState must be usable (else Event Grid retries later)
    parsed = parse_event_grid_trigger(event_id=event_id, subject=subject, event_type=event_type, data=data,
                                      tenant_id=services.settings.tenant_id,
                                      client_state=settings.secret("notification_client_state")
                                      if settings.notification_client_state else None,
                                      source=source, cloud_event=cloud_event)
    if parsed is None:
        return "ignored"
    if isinstance(parsed, LifecycleEvent):
        await enqueue_lifecycle(services, [parsed])
        return "lifecycle"
    await enqueue_notices(services, [parsed])
    return "queued"
