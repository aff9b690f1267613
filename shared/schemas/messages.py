"""Queue messages: what the app puts on `upn-changes` and `policy-jobs`, and reads back.

UPN changes (`upn-changes`), stamped with the tenant (and the run id) when sent:

    {"v": 1, "kind": "users", "source", "users": [{"id", "upn"?, "oldUpn"?, "oldUpnSeenAt"?, "seenAt"?,
     "removed"?}], "at",
     "ticketId"?, "oldUpn"?, "tenant", "runId"?}
    {"v": 1, "kind": "lifecycle", "event", "subscriptionId"?, "tenant", "runId"?}

The slow lane (`passkey-reads`): the changed users whose passkeys the processor did not read itself, 20 a
message (one `$batch` of fido2Methods reads under the tenant's authentication-method pace):

    {"v": 1, "kind": "passkeys", "source", "users": [{"id", "upn", "oldUpn", "detectedAt", "oldUpnSeenAt"?,
     "oldUpnOrigin"?, "holder"?}], "at", "ticketId"?, "tenant", "runId"?}

Policy jobs (`policy-jobs`): `{"runId", "tenantId", "kind": "plan" | "apply"}`.

The producers build them from these models: `shared.upn.messages` (users_message, lifecycle_message; the
sweep adds `oldUpn` and `oldUpnSeenAt` to its entries, and `send_messages` stamps `tenant` and `runId`) and
`shared.policy.jobs` (job_message); `shared.upn.dispatch` and `shared.policy.jobs` read them here. A message
that is not one of these shapes is refused naming the field (`queue message users[3].id: required field
missing`).
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, ValidationError

from shared.errors import InputError
from shared.schemas.base import StrictModel
from shared.schemas.problems import problems_of
from shared.upn.messages import USERS_PER_MESSAGE  # one $batch of fido2Methods reads; no pydantic there

NonEmpty = Annotated[str, StringConstraints(min_length=1)]


class QueueMessage(StrictModel):
    """A message the app wrote itself: a `null` is the same as a field left out."""

    nulls_are_absent = True


class StampedMessage(QueueMessage):
    """What every queued message carries beside its kind: its version, and the tenant and run `send_messages`
    stamped it with."""

    v: int | None = None
    tenant: str | None = None
    runId: str | None = None


class UserEntry(QueueMessage):
    """One user of a `users` message: the id, and what the sender already knew about them."""

    id: NonEmpty
    upn: str | None = None
    oldUpn: str | None = None
    oldUpnSeenAt: str | None = Field(default=None, description="when the snapshot last saw `oldUpn` (ISO 8601)")
    seenAt: str | None = Field(default=None, description="when the sweep read `upn` from Graph (ISO 8601)")
    removed: str | None = Field(default=None, description="why the user is gone (e.g. deleted)")


class UsersMessage(StampedMessage):
    """Users to process (at most 20): each one's current UPN is compared with its snapshot."""

    kind: Literal["users"]
    source: str = "sweep"
    users: list[UserEntry] = Field(min_length=1, max_length=USERS_PER_MESSAGE)
    at: str | None = None
    ticketId: str | None = None
    oldUpn: str | None = None


class LifecycleMessage(StampedMessage):
    """Subscription lifecycle work queued by the webhook (reauthorize and renew, recreate, sweep)."""

    kind: Literal["lifecycle"]
    event: str
    subscriptionId: str | None = None


class PasskeyEntry(QueueMessage):
    """One changed user whose passkeys the slow lane reads: the change the processor saw, and whether the
    registration report listed them (`holder`: their flag is open already, waiting for its details)."""

    id: NonEmpty
    upn: NonEmpty
    oldUpn: NonEmpty
    detectedAt: NonEmpty = Field(description="when the processor saw the change (ISO 8601)")
    oldUpnSeenAt: str | None = Field(default=None, description="when the snapshot last saw `oldUpn` (ISO 8601)")
    oldUpnOrigin: Literal["snapshot", "ticket"] | None = None
    holder: bool | None = None


class PasskeyReadsMessage(StampedMessage):
    """Changed users (at most 20) whose passkeys decide their case: read, then flag, complete or let go."""

    kind: Literal["passkeys"]
    source: str = "sweep"
    users: list[PasskeyEntry] = Field(min_length=1, max_length=USERS_PER_MESSAGE)
    at: str | None = None
    ticketId: str | None = None


ChangeMessage = UsersMessage | LifecycleMessage
_CHANGE_KINDS: dict[str, type[ChangeMessage]] = {"users": UsersMessage, "lifecycle": LifecycleMessage}


class PolicyJob(StrictModel):
    """A queued HTTP plan or apply: the run row (`runId`) holds the request."""

    runId: NonEmpty
    tenantId: NonEmpty
    kind: Literal["plan", "apply"]


def _first(error: ValidationError, what: str) -> InputError:
    items = problems_of(error)
    return InputError(f"{what} {items[0]['field']}: {items[0]['problem']}", detail=items)


def _json(body: bytes | str, what: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputError(f"{what} is not JSON") from None


def parse_change_message(body: bytes | str) -> ChangeMessage:
    """A `upn-changes` message; InputError naming the field when it is none of the shapes above."""
    message = _json(body, "queue message")
    kind = message.get("kind") if isinstance(message, dict) else None
    model = _CHANGE_KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise InputError("queue message has no known kind")
    try:
        return model.model_validate(message)
    except ValidationError as exc:
        raise _first(exc, "queue message") from None


def parse_passkey_message(body: bytes | str) -> PasskeyReadsMessage:
    """A `passkey-reads` message; InputError naming the field when it is not that shape."""
    message = _json(body, "queue message")
    try:
        return PasskeyReadsMessage.model_validate(message)
    except ValidationError as exc:
        raise _first(exc, "queue message") from None


def parse_policy_job(body: bytes | str) -> PolicyJob:
    """A `policy-jobs` message; InputError naming the field when it is not `{runId, tenantId, kind}`."""
    message = _json(body, "policy job message")
    try:
        return PolicyJob.model_validate(message)
    except ValidationError as exc:
        raise _first(exc, "policy job message") from None
