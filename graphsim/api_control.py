"""`/_sim/*` control endpoints: knobs, stats, ground-truth state and test-only actions.

No bearer token, never throttled, faulted or counted. Endpoints:
`GET|PATCH /_sim/config`, `GET /_sim/stats`, `POST /_sim/stats/reset`, `GET /_sim/state[?users=false]`,
`POST /_sim/delta/invalidate`, `POST /_sim/throttle/reset`, `GET|POST /_sim/clock` (alias `POST /_sim/throttle/clock`),
`POST /_sim/notifications/flush`,
`POST /_sim/users/{id}/fido2Methods` (register a passkey), `POST /_sim/users/bulk_rename`,
`POST /_sim/subscriptions/{id}/lifecycle`, `GET /_sim/health`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graphsim.errors import GraphApiError, bad_request
from graphsim.routing import SimRequest, SimResponse
from graphsim.store import User, upn_conflict

if TYPE_CHECKING:
    from graphsim.app import SimServer

LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")
_THROTTLE_KNOBS = ("throttle_", "write_", "auth_methods_")


def health(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """Liveness and size: users (live), users holding at least one passkey, passkeys."""
    live = [u for u in sim.store.users.values() if not u.deleted]
    return SimResponse(200, {"ok": True, "tenantId": sim.store.tenant_id, "users": len(live),
                             "usersWithPasskeys": sum(1 for u in live if u.fido2),
                             "passkeys": sum(len(u.fido2) for u in live)})


def get_config(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """All knobs."""
    return SimResponse(200, sim.config.as_dict())


def patch_config(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """Change knobs; throttle knobs refill the buckets, unpausing notifications flushes the queue, unpausing
    Graph lets the held requests on."""
    try:
        changed = sim.config.update(req.json_object())
    except ValueError as exc:
        raise bad_request(str(exc)) from None
    if any(name.startswith(_THROTTLE_KNOBS) for name in changed):
        sim.throttle.reset()
    if "fault_seed" in changed:
        sim.faults.reseed()
    if "notify_paused" in changed:
        sim.notifier.kick()
    if "graph_paused" in changed:
        sim.pause_changed()
    return SimResponse(200, sim.config.as_dict())


def get_stats(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """Counters plus bucket levels, queued notifications, Graph requests held by `graph_paused`, notifications
    held for a slow endpoint and each notification URL's state (normal, slow, drop)."""
    return SimResponse(200, sim.stats.as_dict({"ru_levels": sim.throttle.levels(),
                                               "notifications_pending": len(sim.notifier.pending),
                                               "graph_held": sim.held,
                                               "notifications_delayed": sum(len(d[2]) for d in sim.notifier.delayed),
                                               "endpoints": sim.notifier.endpoint_states()}))


def reset_stats(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """Zero the counters."""
    sim.stats.reset()
    return SimResponse(200, sim.stats.as_dict())


def get_state(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """The whole tenant (`?users=false` leaves users out)."""
    include = req.query.get("users", "true").lower() != "false"
    return SimResponse(200, sim.store.dump(include_users=include))


def invalidate_delta(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """Every delta token issued so far answers 410 from now on."""
    return SimResponse(200, {"generation": sim.delta.invalidate()})


def reset_throttle(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """Refill every bucket and forget the last CA call."""
    sim.throttle.reset()
    return SimResponse(200, {"ok": True})


def throttle_clock(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """`{"frozen": bool, "advance": seconds}` (both optional): freeze or release the simulator's clock (the
    throttle's is the same one), then move it forward and run the timers that fell due; answers with the
    clock's state. Served as `POST /_sim/clock` and, for older tests, `POST /_sim/throttle/clock`."""
    body = req.json_object()
    clock = sim.clock
    try:
        if "frozen" in body:
            clock.freeze(bool(body["frozen"]))
        clock.advance(float(body.get("advance", 0.0)))
    except (TypeError, ValueError) as exc:
        raise bad_request(f"advance: {exc}") from None
    sim.tick()
    return SimResponse(200, clock.state())


def get_clock(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """`GET /_sim/clock`: frozen or not, the monotonic reading and Graph's current time."""
    return SimResponse(200, sim.clock.state())


def flush_notifications(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """Send queued notifications now instead of after the batching window."""
    queued = len(sim.notifier.pending)
    sim.notifier.flush()
    return SimResponse(200, {"flushed": queued if not sim.config.notify_paused else 0})


def register_passkey(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """Add a passkey to a user, as if the user registered one; 201 with the method."""
    user = sim.store.require_user(params["id"])
    return SimResponse(201, sim.store.add_fido2(user, req.json_object()))


def bulk_rename(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """Rename many users at once: `{"from_domain", "to_domain"}` or `{"users": [{id, userPrincipalName}]}`
    (or that list alone); `"notify": false` skips notifications. Conflicts are skipped and reported."""
    body = req.json()
    if isinstance(body, list):
        body = {"users": body}
    if not isinstance(body, dict):
        raise bad_request("bulk_rename takes an object or a list")
    store = sim.store
    plan: list[tuple[User, str]] = []
    if "from_domain" in body:
        old, new = str(body["from_domain"]).lower().lstrip("@"), str(body.get("to_domain", "")).lstrip("@")
        if not old or not new:
            raise bad_request("from_domain and to_domain are required")
        suffix = "@" + old
        for user in store.user_order:
            if not user.purged and user.upn.lower().endswith(suffix):
                plan.append((user, user.upn[: -len(suffix)] + "@" + new))
    else:
        for entry in body.get("users") or []:
            found = store.user_by_key(str(entry.get("id", "")), include_deleted=True)
            if found is None or found.purged:
                raise GraphApiError(404, "Request_ResourceNotFound", f"user {entry.get('id')!r} not found")
            plan.append((found, str(entry["userPrincipalName"])))
    notify = bool(body.get("notify", True))
    renamed, conflicts = 0, []
    sim.notifier.enabled = notify
    try:
        for user, upn in plan:
            try:
                if store.update_user(user, {"userPrincipalName": upn}):
                    renamed += 1
            except GraphApiError as exc:
                if exc.message != upn_conflict().message:
                    raise
                conflicts.append(user.id)
    finally:
        sim.notifier.enabled = True
    return SimResponse(200, {"renamed": renamed, "conflicts": conflicts, "seq": store.seq})


def lifecycle(sim: SimServer, req: SimRequest, params: dict[str, str]) -> SimResponse:
    """Send a lifecycle notification for a subscription (in the background); 202."""
    sub: dict[str, Any] | None = sim.store.subscriptions.get(params["id"])
    if sub is None:
        raise GraphApiError(404, "ResourceNotFound", f"subscription {params['id']} not found")
    event = req.json_object().get("lifecycleEvent")
    if event not in LIFECYCLE_EVENTS:
        raise bad_request(f"lifecycleEvent must be one of {list(LIFECYCLE_EVENTS)}")
    if not sim.notifier.lifecycle(sub, event):
        raise bad_request("the subscription has no lifecycleNotificationUrl")
    if event == "subscriptionRemoved":
        sim.store.subscriptions.pop(sub["id"], None)
    return SimResponse(202, {"queued": True})
