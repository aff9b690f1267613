"""UPN-change detection. The pure core: the parsers of every surface that tells us about users (`intake`
with `graph_notifications`, `event_grid_events` and `ticket_webhook`), the flag record (`flag`), the
decisions about what a flag becomes (`decide`) and the clock they stamp with (`clock`).

Around it, one module per use case doing the I/O: `messages` (queueing the queue's messages), `dispatch`
(the queue trigger's work), `processor`, `sweep`, `tracker` (re-registration and stale-passkey removal),
`subscriptions`, `tickets`, `event_grid` and `flag_views` (the flag list and CSV export); `drain` runs the
queue for the CLI.

Import from the module that defines a name (`from shared.upn.decide import decide_change`): the package
re-exports nothing, so importing one module does not load the others.
"""
