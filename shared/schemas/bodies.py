"""HTTP request bodies: what each route that reads a body accepts, field by field.

`shared.web.read_body` parses a body into one of these (a 400 names the field); `make schemas` writes them
into the OpenAPI description's `components.schemas` under the names in `OPENAPI_BODIES`.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from shared.schemas.base import StrictModel

#: User ids per approval request.
MAX_APPROVALS = 1000


class DocumentBody(StrictModel):
    """The body of POST /api/policy/verify and /api/policy/plan (empty, or an ad-hoc document)."""

    document: dict[str, Any] | None = Field(
        default=None, description="a desired-state document (shared/policy/desired-state.schema.json); only with "
                                  "ALLOW_ADHOC_DOCUMENTS true")


class AcceptLockout(StrictModel):
    """Accept that the plan locks out exactly `users` users; `planId` must be this plan's id and `users` its
    number of locked-out users (the job checks it again before writing)."""

    planId: str = Field(min_length=1)
    users: int = Field(ge=0)


class AcceptNoEmergencyExclusion(StrictModel):
    """Accept that the plan enforces a Conditional Access policy that excludes no emergency-access user or
    group; `planId` must be this plan's id."""

    planId: str = Field(min_length=1)


class ApplyBody(StrictModel):
    """The body of POST /api/policy/apply."""

    planId: str = Field(min_length=1, description="the id the plan job returned")
    acceptLockout: AcceptLockout | None = None
    acceptNoEmergencyExclusion: AcceptNoEmergencyExclusion | None = None


UserId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class ApprovalBody(StrictModel):
    """The body of POST /api/flags/approve-removal."""

    userIds: list[UserId] = Field(
        min_length=1, max_length=MAX_APPROVALS,
        description="users whose flags wait for an approval (pending, removalApproval required)")


def _ticket_body() -> type[BaseModel]:
    from shared.schemas.tickets import TicketBody

    return TicketBody


#: The components of the OpenAPI description generated from the models: name there -> model.
OPENAPI_BODIES: dict[str, type[BaseModel]] = {
    "DocumentBody": DocumentBody,
    "ApplyBody": ApplyBody,
    "ApprovalBody": ApprovalBody,
    "TicketEvent": _ticket_body(),
}
