"""UPN-change detection: the pure core (`intake` parsers, `decide` decisions) and, around it, one module
per use case doing the I/O: `messages` (the queue's messages), `dispatch` (the queue trigger's work),
`processor`, `sweep`, `tracker` (re-registration and stale-passkey removal), `subscriptions`, `tickets`,
`event_grid` and `flag_views` (the flag list and CSV export); `drain` runs the queue for the CLI."""
from __future__ import annotations

from shared.upn.decide import (
    OPEN_STATUSES,
    SOURCES,
    TRANSITIONS,
    Decision,
    DecisionKind,
    Flag,
    FlagStatus,
    HistoryEntry,
    PasskeyRef,
    TrackResult,
    decide_change,
    dismiss,
    flag_from_dict,
    flag_to_dict,
    mark_removed,
    merge_flag,
    passkey_refs,
    same_upn,
    stale_passkeys_to_remove,
    track,
    transition,
)
from shared.upn.event_grid_events import parse_event_grid_batch, parse_event_grid_events, parse_event_grid_trigger
from shared.upn.graph_notifications import (
    MAX_VALIDATION_TOKEN_CHARS,
    parse_change_notifications,
    parse_lifecycle_notifications,
    validation_token,
)
from shared.upn.intake import (
    MAX_BODY_BYTES,
    ChangeNotice,
    EventGridBatch,
    LifecycleEvent,
    NotificationBatch,
    Rejected,
    is_guid,
)
from shared.upn.ticket_webhook import (
    MAX_TICKET_BYTES,
    SIGNATURE_HEADER,
    TICKET_WINDOW,
    TIMESTAMP_HEADER,
    TicketEvent,
    sign_ticket,
    verify_ticket,
)

__all__ = [
    "MAX_BODY_BYTES", "MAX_TICKET_BYTES", "MAX_VALIDATION_TOKEN_CHARS", "OPEN_STATUSES", "SIGNATURE_HEADER",
    "SOURCES", "TICKET_WINDOW", "TIMESTAMP_HEADER", "TRANSITIONS", "ChangeNotice", "Decision", "DecisionKind",
    "EventGridBatch", "Flag", "FlagStatus", "HistoryEntry", "LifecycleEvent", "NotificationBatch", "PasskeyRef",
    "Rejected", "TicketEvent", "TrackResult", "decide_change", "dismiss", "flag_from_dict", "flag_to_dict",
    "is_guid", "mark_removed", "merge_flag", "parse_change_notifications", "parse_event_grid_batch",
    "parse_event_grid_events", "parse_event_grid_trigger", "parse_lifecycle_notifications", "passkey_refs",
    "same_upn", "sign_ticket", "stale_passkeys_to_remove", "track", "transition", "validation_token",
    "verify_ticket",
]
