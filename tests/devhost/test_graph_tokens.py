"""The local stack's Graph tokens carry exactly the roles infra grants, so the simulator checks real roles."""
from __future__ import annotations

import json
from pathlib import Path

from devhost.azurite import Azurite
from devhost.graph_tokens import admin_token, app_token, granted_roles, mode_roles
from devhost.stack import local_stack, loopback, stack_settings, tenant_id_of
from shared.graph.permissions import granted_roles as token_roles
from shared.graph.permissions import token_claims
from tests.e2e.stack import tenant, user

ROOT = Path(__file__).resolve().parents[2]
INFRA = json.loads((ROOT / "infra" / "graph-permissions.json").read_text())


def infra(*conditions: str) -> set[str]:
    return {e["role"] for e in INFRA["roles"] if e["when"] in conditions}


def test_mode_roles_are_infras_selection_for_the_settings() -> None:
    """Audit, enforce and the stale-passkey switch select the roles infra/graph-permissions.json grants."""
    assert set(mode_roles({})) == infra("always", "audit", "keepStalePasskeys")
    assert set(mode_roles({"ENFORCEMENT_MODE": "Enforce", "REMOVE_STALE_PASSKEYS": "true"})) == infra(
        "always", "enforce", "removeStalePasskeys")
    assert set(mode_roles({"ENFORCEMENT_MODE": "enforce"}, read_applications=True)) == infra(
        "always", "enforce", "keepStalePasskeys", "readApplications")
    assert "Policy.ReadWrite.AuthenticationMethod" not in mode_roles({})


def test_the_tokens_are_app_only_and_delegated_jwts_for_the_tenant() -> None:
    """The app token is app-only with `roles`; the administrator's is delegated with every infra role in `scp`."""
    app = token_claims(app_token("t-1", ["A", "B"]))
    assert app is not None and app["tid"] == "t-1" and app["idtyp"] == "app" and app["roles"] == ["A", "B"]
    admin = token_claims(admin_token("t-1"))
    assert admin is not None and admin["tid"] == "t-1" and admin["idtyp"] == "user" and "roles" not in admin
    assert token_roles(admin) == {e["role"] for e in INFRA["roles"]} == set(granted_roles(
        "always", "audit", "enforce", "removeStalePasskeys", "keepStalePasskeys", "readApplications"))


def test_without_a_token_of_the_callers_the_settings_carry_the_modes_app_token(azurite: Azurite) -> None:
    """stack_settings mints the app token of the configured mode for the stack's tenant; a caller's wins."""
    doc = tenant([user(1)])
    with loopback(doc, azurite=azurite) as (storage, sim):
        values = stack_settings(storage, sim, tenant_id_of(doc), ENFORCEMENT_MODE="enforce")
        claims = token_claims(values["GRAPH_DEV_TOKEN"])
        assert claims is not None and claims["tid"] == doc["tenantId"]
        assert set(claims["roles"]) == infra("always", "enforce", "keepStalePasskeys")
        assert stack_settings(storage, sim, "x", GRAPH_DEV_TOKEN="t")["GRAPH_DEV_TOKEN"] == "t"


async def test_a_stack_with_its_own_token_refuses_opaque_ones(azurite: Azurite) -> None:
    """A local stack that minted its token sets the simulator's opaque_token_roles to none; one given a token
    by the caller leaves the default (all)."""
    async with local_stack(tenant([user(1)]), azurite=azurite, serve=False) as stack:
        assert stack.sim.control("GET", "config")["opaque_token_roles"] == "none"
    async with local_stack(tenant([user(1)]), azurite=azurite, serve=False,
                           settings={"GRAPH_DEV_TOKEN": "t"}) as stack:
        assert stack.sim.control("GET", "config")["opaque_token_roles"] == "all"
