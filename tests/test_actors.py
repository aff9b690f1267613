"""Who a run record names: the token's user claims in order, the HTTP principal, or the app."""
from __future__ import annotations

from shared.actors import (
    THE_APP,
    Actor,
    actor_from_claims,
    actor_from_principal,
    describe_run_actor,
    run_fields,
)
from shared.principal import Principal

OID = "5f0c3d1e-0000-4000-8000-00000000a11e"


def test_the_first_user_name_claim_wins_and_the_object_id_goes_beside_it() -> None:
    """upn before preferred_username before unique_name; the oid is kept, nothing else of the token."""
    claims = {"upn": "a@contoso.example", "preferred_username": "b@contoso.example", "unique_name": "c",
              "oid": OID, "scp": "Policy.Read.All", "tid": "t"}
    assert actor_from_claims(claims) == Actor("a@contoso.example", OID)
    assert actor_from_claims({"preferred_username": "b@contoso.example", "unique_name": "c"}) == Actor(
        "b@contoso.example")
    assert actor_from_claims({"unique_name": "c@contoso.example"}) == Actor("c@contoso.example")
    assert actor_from_claims({"oid": OID, "upn": ""}) == Actor(OID, OID)
    assert actor_from_claims({"appid": "x", "roles": []}) is None


def test_an_http_principal_is_named_by_its_name_else_its_object_id() -> None:
    """The Entra principal's name and object id; without a principal the call is the app's own."""
    named = Principal(auth_type="aad", name="admin@contoso.example", object_id=OID, roles=frozenset())
    assert actor_from_principal(named) == Actor("admin@contoso.example", OID)
    assert actor_from_principal(Principal("aad", None, OID, frozenset())) == Actor(OID, OID)
    assert actor_from_principal(None) == THE_APP


def test_only_the_apps_own_runs_carry_the_mode() -> None:
    """A CLI or HTTP run has no mode; the app's timer run has its mode; the text line says who acted."""
    admin = run_fields("cli", Actor("a@contoso.example", OID), "audit")
    assert admin == {"trigger": "cli", "actor": {"name": "a@contoso.example", "objectId": OID}}
    app = run_fields("timer", THE_APP, "audit")
    assert app == {"trigger": "timer", "actor": {"name": "the app"}, "mode": "audit"}
    assert describe_run_actor(admin) == "cli by a@contoso.example"
    assert describe_run_actor(app) == "timer by the app (audit mode)"
    assert describe_run_actor({"trigger": "cli", "mode": "audit"}) == "cli (who acted was not recorded)"
