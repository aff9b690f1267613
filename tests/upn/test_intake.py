"""What every intake surface shares (shared/upn/intake.py): the batch rule."""
from __future__ import annotations

import pytest

from shared.errors import AuthError, InputError
from shared.upn.intake import Rejected, finish_batch


def test_a_batch_with_something_accepted_never_raises() -> None:
    """One accepted item keeps the POST a success whatever else was refused."""
    finish_batch([object()], [Rejected(0, "auth", "value[0].clientState: does not match"),
                              Rejected(1, "invalid", "value[1].changeType: missing")])


def test_nothing_accepted_and_something_unauthentic_is_an_auth_error() -> None:
    """Nothing accepted and an item that failed clientState or tenant: 401 naming the first reason."""
    with pytest.raises(AuthError, match=r"^value\[1\]\.tenantId: not this tenant$"):
        finish_batch([], [Rejected(0, "invalid", "value[0].changeType: missing"),
                          Rejected(1, "auth", "value[1].tenantId: not this tenant")])


def test_nothing_accepted_and_something_malformed_is_an_input_error() -> None:
    """Nothing accepted, every item authentic but one malformed: 400 naming it; only ignored items: no error."""
    with pytest.raises(InputError, match=r"^value\[0\]\.changeType: missing$"):
        finish_batch([], [Rejected(0, "invalid", "value[0].changeType: missing")])
    finish_batch([], [Rejected(0, "ignored", "events[0].type: not a Graph user event")])

