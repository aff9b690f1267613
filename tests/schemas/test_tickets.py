"""The ticket webhook's payload model (shared/schemas/tickets.py): null is absent, ids lowercased, each field's
rule named in its own words."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.schemas.problems import problems_of
from shared.schemas.tickets import TicketBody

USER = "AAAAAAAA-bbbb-cccc-dddd-eeeeeeeeeeee"


def problems(**fields: object) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as caught:
        TicketBody.model_validate(fields)
    return problems_of(caught.value)


def test_a_ticket_is_read_with_null_as_absent() -> None:
    """The user id is lowercased; a null field is the same as one left out."""
    body = TicketBody.model_validate({"eventId": "e-1", "action": "upn_changed", "userId": USER, "ticketId": None,
                                      "oldUpn": "a@contoso.com"})
    assert body.userId == USER.lower() and body.ticketId is None and body.oldUpn == "a@contoso.com"


def test_verify_policy_needs_no_user_and_user_actions_do() -> None:
    """verify_policy stands alone; upn_changed and recheck_user need userId or userPrincipalName."""
    assert TicketBody.model_validate({"eventId": "e", "action": "verify_policy"}).userId is None
    assert TicketBody.model_validate({"eventId": "e", "action": "recheck_user",
                                      "userPrincipalName": "a@contoso.com"}).userPrincipalName == "a@contoso.com"
    assert problems(eventId="e", action="recheck_user") == [
        {"field": "userId", "problem": "required for action recheck_user (or give userPrincipalName)"}]


@pytest.mark.parametrize(("fields", "expected"), [
    ({"eventId": None, "action": "verify_policy"}, {"field": "eventId", "problem": "missing"}),
    ({"eventId": "a/b", "action": "verify_policy"},
     {"field": "eventId", "problem": "only letters, digits and . _ : - are allowed"}),
    ({"eventId": "e", "action": "delete"},
     {"field": "action", "problem": "expected one of recheck_user, upn_changed, verify_policy"}),
    ({"eventId": "e", "action": "verify_policy", "newUpn": "no-at-sign"},
     {"field": "newUpn", "problem": "expected a user principal name (name@domain)"}),
    ({"eventId": "e", "action": "verify_policy", "ticketId": "a\nb"},
     {"field": "ticketId", "problem": "contains control characters"}),
    ({"eventId": "e", "action": "verify_policy", "ticketId": " "}, {"field": "ticketId", "problem": "empty"}),
])
def test_each_field_names_its_problem(fields: dict, expected: dict) -> None:
    """Every field's rule says what is wrong in the words the webhook's callers already know."""
    assert expected in problems(**fields)
