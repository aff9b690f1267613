"""Who acted in a run, as the `runs` table records it beside the trigger.

- The CLI: the administrator signed in on that machine, named by the Graph token's claims (`upn`,
  `preferred_username`, `unique_name`, else the object id). Against the loopback simulator an opaque dev
  token names no one: "local developer (dev token)".
- HTTP: the Entra principal App Service vouched for (shared/principal.py).
- Timers, queues and tickets: the app itself; only these runs carry the app's `mode`, since only they act
  under it (an administrator's CLI apply writes whatever the app's mode).

A record holds a name and an object id only: never a token or any other claim.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.graph.gateway import GraphGateway
    from shared.principal import Principal

log = logging.getLogger(__name__)
_NAME_CLAIMS = ("upn", "preferred_username", "unique_name")


@dataclass(frozen=True)
class Actor:
    """A person or application a run acted for; `is_app` is the app itself (its own schedule or queue)."""

    name: str
    object_id: str | None = None
    is_app: bool = False

    def to_json(self) -> dict[str, str]:
        """The run record's `actor`: the name, and the object id when known."""
        return {"name": self.name, **({"objectId": self.object_id} if self.object_id else {})}


THE_APP = Actor("the app", is_app=True)
LOCAL_DEVELOPER = Actor("local developer (dev token)")
UNKNOWN_ADMINISTRATOR = Actor("administrator (not named by the token)")
#: What the CLI passes: the administrator its Graph token names, read when the run is recorded (by then
#: the run's Graph calls have signed in, so a failed sign-in keeps its own error and no extra prompt).
SIGNED_IN_ADMINISTRATOR = Actor("the signed-in administrator")


def actor_from_claims(claims: dict[str, Any]) -> Actor | None:
    """The signed-in user a token's claims name (the first name claim, else the object id), or None."""
    oid = claims.get("oid") if isinstance(claims.get("oid"), str) and claims.get("oid") else None
    name = next((claims[c] for c in _NAME_CLAIMS if isinstance(claims.get(c), str) and claims[c]), None)
    if name is None and oid is None:
        return None
    return Actor(str(name or oid), oid)


def actor_from_principal(principal: Principal | None) -> Actor:
    """The Entra principal of an HTTP call (its name, else its object id); without one, the app's own call."""
    if principal is None or not (principal.name or principal.object_id):
        return THE_APP
    return Actor(principal.name or str(principal.object_id), principal.object_id)


async def administrator_actor(graph: GraphGateway) -> Actor:
    """The administrator the CLI's Graph token belongs to; reads the token the run already used (cached)."""
    from shared.graph.permissions import token_claims

    claims = token_claims(await graph.access_token())
    actor = actor_from_claims(claims) if claims is not None else None
    if actor is not None:
        return actor
    if claims is None and graph.settings.graph_is_local:
        return LOCAL_DEVELOPER
    log.info("the administrator's Graph token names no user; the run records an unnamed administrator")
    return UNKNOWN_ADMINISTRATOR


async def resolve_actor(graph: GraphGateway, actor: Actor) -> Actor:
    """`actor` itself; for SIGNED_IN_ADMINISTRATOR, the administrator the Graph token names."""
    if actor != SIGNED_IN_ADMINISTRATOR:
        return actor
    try:
        return await administrator_actor(graph)
    except Exception as exc:  # naming the administrator must never lose the run's record
        log.warning("could not read the administrator's name from the Graph token: %s", type(exc).__name__)
        return UNKNOWN_ADMINISTRATOR


def run_fields(trigger: str, actor: Actor, mode: str) -> dict[str, Any]:
    """The `trigger`, `actor` and, for the app's own runs only, `mode` of a run record."""
    return {"trigger": trigger, "actor": actor.to_json(), **({"mode": mode} if actor.is_app else {})}


def describe_run_actor(run: dict[str, Any]) -> str:
    """'<trigger> by <who>' for a run's text line: the app with its mode, or the person named; runs
    recorded before actors were recorded say so rather than guess."""
    actor = run.get("actor")
    if not isinstance(actor, dict) or not actor.get("name"):
        return f"{run.get('trigger', '?')} (who acted was not recorded)"
    mode = f" ({run['mode']} mode)" if run.get("mode") and actor.get("name") == THE_APP.name else ""
    return f"{run.get('trigger', '?')} by {actor['name']}{mode}"
