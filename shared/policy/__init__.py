"""Policy as code. The pure core (no I/O): the desired-state document (`document`), the current-state views
(`current`), the plan (`plan_model`, `plan_method`, `plan`, `lockout`, `plan_codec`), the rollback plan
(`rollback_plan`), compliance checks (`checks`), passkey provider names (`aaguids`) and everything people
read (`render`). Callers read Graph and storage, hand plain JSON in, and send the plan's `writes` out (see
`shared.policy.plan_model` for their format).

The use cases, one per module, do the I/O through `shared.graph` and `shared.state`: `verify`, `planning`,
`apply`, `rollback`, `scheduled` (the timer), `runs` (recording and listing runs) and `jobs` (HTTP plan and
apply as queued jobs); `inputs` reads what they all start from.

Import from the module that defines a name (`from shared.policy.plan import build_plan`): the package
re-exports nothing, so importing one module does not load the others.
"""
