"""The app token's roles gate every policy write: verify, plan and apply against the simulator and Azurite
with the dev token set to an unsigned JWT carrying the roles infra grants per mode."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from devhost.graph_tokens import admin_token, app_token, mode_roles
from devhost.stack import local_stack
from shared.config import Settings
from shared.errors import MissingGraphPermission
from shared.graph.permissions import granted_roles as token_roles
from shared.graph.permissions import token_claims
from shared.policy.apply import apply_document, apply_stored_plan
from shared.policy.planning import plan
from shared.policy.rollback import rollback
from shared.policy.scheduled import scheduled_run
from shared.policy.verify import verify
from shared.services import Services
from shared.web import error_answer
from tests.conftest import TEST_SETTINGS
from tests.e2e.stack import running_stack
from tests.e2e.test_cli import cli, cli_env
from tests.e2e.test_policy_e2e import BREAK_GLASS, PILOT, doc_with, legacy_tenant
from tests.graph.test_permissions import APP_GUID, granted, unsigned_jwt

ROOT = Path(__file__).resolve().parents[2]
AUDIT = sorted(granted("always", "audit", "keepStalePasskeys"))
ENFORCE = sorted(granted("always", "enforce", "keepStalePasskeys"))


def token(roles: list[str]) -> str:
    return unsigned_jwt({"aud": "https://graph.microsoft.com", "appid": "passkey-guard", "idtyp": "app",
                         "roles": roles})


def write_routes(stats: dict) -> list[str]:
    """Routes of the simulator's request log that are writes (anything but GET; the $batch envelope of
    reads is not one: its items are logged under their own routes)."""
    return [route for route in stats["calls"]["by_route"] if not route.startswith("GET ") and route != "POST /$batch"]


def ca_doc(apps: list[str]) -> dict:
    return doc_with(conditionalAccess={"displayName": "Require Authenticator passkey", "includeGroups": [PILOT],
                                       "excludeGroups": [BREAK_GLASS], "includeApplications": apps})


async def test_audit_roles_suffice_for_verify_and_plan(azurite):
    """With audit mode's read-only roles, verify and plan work and nothing is written."""
    async with running_stack(azurite, legacy_tenant(), drain=False, GRAPH_DEV_TOKEN=token(AUDIT)) as stack:
        report = await verify(stack.services, trigger="test", document=doc_with())
        assert report["result"] in ("passed", "failed") and report["checks"]
        planned = await plan(stack.services, trigger="test", document=doc_with())
        assert planned["plan"]["writes"]
        assert stack.sim.stats()["writes"] == 0 and write_routes(stack.sim.stats()) == []


async def test_apply_with_audit_roles_is_refused_naming_the_role_and_writes_nothing(azurite):
    """Apply with read-only roles: 403 missingGraphPermission naming the write role; no Graph write at all."""
    async with running_stack(azurite, legacy_tenant(), drain=False, GRAPH_DEV_TOKEN=token(AUDIT)) as stack:
        planned = await plan(stack.services, trigger="test", document=ca_doc(["All"]))
        with pytest.raises(MissingGraphPermission) as caught:
            await apply_stored_plan(stack.services, planned["planId"], accept_lockout=False, trigger="test")
        answer = error_answer(caught.value)
        assert answer.status == 403 and answer.body["error"]["code"] == "missingGraphPermission"
        assert answer.body["error"]["detail"]["missingRoles"] == ["Policy.ReadWrite.AuthenticationMethod",
                                                                  "Policy.ReadWrite.ConditionalAccess"]
        assert "Policy.ReadWrite.AuthenticationMethod" in answer.body["error"]["message"]
        stats = stack.sim.stats()
        assert stats["writes"] == 0 and write_routes(stats) == [], stats["calls"]["by_route"]
        runs = await stack.services.store.runs.page(limit=5)
        assert runs[0][0]["result"] == "failed" and runs[0][0]["error"]["code"] == "missingGraphPermission"


async def test_enforce_roles_apply(azurite):
    """With enforce mode's roles the same document applies (the check lets a complete token through)."""
    async with running_stack(azurite, legacy_tenant(), drain=False, GRAPH_DEV_TOKEN=token(ENFORCE)) as stack:
        result = await apply_document(stack.services, trigger="test", document=ca_doc(["All"]))
        assert result["result"] == "applied"


async def test_a_ca_document_naming_an_application_needs_application_read(azurite):
    """A CA section with an application id is refused without Application.Read.All (named), applied with it."""
    async with running_stack(azurite, legacy_tenant(), drain=False, GRAPH_DEV_TOKEN=token(ENFORCE)) as stack:
        with pytest.raises(MissingGraphPermission) as caught:
            await apply_document(stack.services, trigger="test", document=ca_doc([APP_GUID]))
        assert caught.value.detail["missingRoles"] == ["Application.Read.All"]
        assert "Application.Read.All" in caught.value.message
        assert stack.sim.stats()["writes"] == 0
    roles = sorted({*ENFORCE, *granted("readApplications")})
    async with running_stack(azurite, legacy_tenant(), drain=False, GRAPH_DEV_TOKEN=token(roles)) as stack:
        result = await apply_document(stack.services, trigger="test", document=ca_doc([APP_GUID]))
        assert result["result"] == "applied"


async def test_rollback_is_gated_by_the_same_check(azurite):
    """A rollback needs the FIDO2 write role too; with read-only roles it writes nothing."""
    async with running_stack(azurite, legacy_tenant(), drain=False, GRAPH_DEV_TOKEN=token(ENFORCE)) as stack:
        applied = await apply_document(stack.services, trigger="test", document=doc_with())
        assert applied["result"] == "applied"
        stack.services.settings = replace(stack.services.settings, graph_dev_token=token(AUDIT))
        stack.services.graph.settings = stack.services.settings
        await stack.services.graph.close()  # the next call builds a client with the read-only token
        writes = stack.sim.stats()["writes"]
        with pytest.raises(MissingGraphPermission):
            await rollback(stack.services, applied["runId"], accept_lockout=True, trigger="test")
        assert stack.sim.stats()["writes"] == writes


def test_the_e2e_tokens_follow_the_documented_roles() -> None:
    """The tokens above carry exactly what infra grants (so the e2e tests pin the deployed behaviour)."""
    doc = json.loads((ROOT / "infra" / "graph-permissions.json").read_text())
    assert set(AUDIT) | set(ENFORCE) <= {e["role"] for e in doc["roles"]}


async def test_the_tracker_deletes_no_passkey_without_the_passkey_write_role(azurite):
    """REMOVE_STALE_PASSKEYS on but only UserAuthMethod-Passkey.Read.All granted: the tracker refuses, naming
    UserAuthMethod-Passkey.ReadWrite.All, and no passkey is deleted."""
    from shared.upn.sweep import sweep
    from shared.upn.tracker import track_flags
    from tests.e2e.stack import eventually, uid

    async with running_stack(azurite, legacy_tenant(), GRAPH_DEV_TOKEN=token(AUDIT), ENFORCEMENT_MODE="enforce",
                             REMOVE_STALE_PASSKEYS="true") as stack:
        await sweep(stack.services)
        # renamed by someone else, as in the admin centre: the app's own token may not write users (Graph's 403)
        stack.sim.control("POST", "users/bulk_rename", {"users": [
            {"id": uid(1), "userPrincipalName": "user1@fabrikam.example"}]})
        await sweep(stack.services)
        await eventually(lambda: stack.settled_flag(uid(1)))
        stack.sim.reset_stats()
        with pytest.raises(MissingGraphPermission) as caught:
            await track_flags(stack.services)
        assert caught.value.detail["missingRoles"] == ["UserAuthMethod-Passkey.ReadWrite.All"]
        assert write_routes(stack.sim.stats()) == [] and stack.sim.stats()["writes"] == 0
        me = next(u for u in stack.sim.state()["users"] if u["id"] == uid(1))
        assert len(me["authentication"]["fido2Methods"]) == 1
        assert (await stack.flag(uid(1)))["status"] == "pending"


# --- issue 13, must show: the simulator checks each call's roles, as Graph does --------------------------------
async def test_without_the_authentication_method_write_role_apply_is_refused_naming_it(azurite, tmp_path):
    """Enforce mode's roles minus Policy.ReadWrite.AuthenticationMethod (the read role in its place): the apply,
    from the use case and from the CLI, fails naming that permission; Graph sees no write and the FIDO2 policy,
    the strengths and the CA policies are as they were; the run is recorded as failed."""
    roles = sorted({*mode_roles({"ENFORCEMENT_MODE": "enforce"}), "Policy.Read.AuthenticationMethod"}
                   - {"Policy.ReadWrite.AuthenticationMethod"})
    doc = legacy_tenant()
    async with running_stack(azurite, doc, drain=False, ENFORCEMENT_MODE="enforce",
                             GRAPH_DEV_TOKEN=app_token(doc["tenantId"], roles)) as stack:
        stack.sim.configure(opaque_token_roles="none")
        before = stack.sim.state(users=False)
        with pytest.raises(MissingGraphPermission) as caught:
            await apply_document(stack.services, trigger="test", document=ca_doc(["All"]))
        assert caught.value.detail["missingRoles"] == ["Policy.ReadWrite.AuthenticationMethod"]
        assert "Policy.ReadWrite.AuthenticationMethod" in caught.value.message
        assert "nothing was written" in caught.value.message
        runs = await stack.services.store.runs.page(limit=5)
        assert runs[0][0]["result"] == "failed" and runs[0][0]["error"]["code"] == "missingGraphPermission"

        env = {**cli_env(stack, azurite.connection_string), "GRAPH_DEV_TOKEN": app_token(stack.tenant_id, roles)}
        document = tmp_path / "desired.json"
        document.write_text(json.dumps(ca_doc(["All"])))
        applied = await cli(env, "apply", "--document", str(document))
        assert applied.returncode == 2, (applied.stdout, applied.stderr)
        assert "Policy.ReadWrite.AuthenticationMethod" in applied.stderr + applied.stdout
        assert "Traceback" not in applied.stderr

        stats = stack.sim.stats()
        assert stats["writes"] == 0 and write_routes(stats) == [], stats["calls"]["by_route"]
        after = stack.sim.state(users=False)
        for part in ("authenticationMethodConfigurations", "authenticationStrengthPolicies",
                     "conditionalAccessPolicies"):
            assert after[part] == before[part], part


async def test_audit_modes_granted_roles_suffice_for_a_full_verify_run(azurite):
    """The local stack's own app token in audit mode (exactly infra's audit roles, opaque tokens refused): the
    timer's audit-mode run verifies the applied tenant as passed, and Graph refused none of its calls."""
    settings = dict(TEST_SETTINGS)  # no Graph token: the stack mints the audit-mode one
    async with local_stack(legacy_tenant(), azurite=azurite, settings=settings, serve=False) as stack:
        claims = token_claims(stack.services.settings.graph_dev_token)
        assert claims is not None and claims["tid"] == stack.tenant_id
        assert token_roles(claims) == set(AUDIT) == set(mode_roles({}))
        assert stack.sim.control("GET", "config")["opaque_token_roles"] == "none"

        admin = Services.from_settings(Settings.from_env({**stack.settings,
                                                          "GRAPH_DEV_TOKEN": admin_token(stack.tenant_id)}))
        try:  # an administrator applies the desired state from the CLI first, so there is something to pass
            assert (await apply_document(admin, trigger="test"))["result"] == "applied"
        finally:
            await admin.close()

        stack.sim.reset_stats()
        report = await scheduled_run(stack.services)
        assert report["passed"], report["markdown"]
        stats = stack.sim.stats()
        assert stats["calls"]["total"] > 0 and stats["writes"] == 0
        assert "403" not in stats["calls"]["by_status"], stats["calls"]
