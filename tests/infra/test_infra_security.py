"""What checkov cannot see, asserted on the real templates (test_infra_mutations.py breaks each one)."""
from __future__ import annotations

import bicep_checks as checks
import pytest
from bicep_checks import REPO_ROOT

from shared import config

INFRA = checks.INFRA_DIR


def test_storage_is_identity_only_and_private() -> None:
    """Storage: shared keys off, TLS 1.2, no public blob access, HTTPS only, OAuth by default."""
    assert checks.check_storage_security(INFRA) == []


def test_state_tables_and_queues_have_the_names_the_code_uses() -> None:
    """The seven state tables, the UPN, slow-lane and policy-job queues (with their poison queues) have the code's
    names."""
    assert checks.check_state_names(INFRA, config.QUEUE_NAME, config.POLICY_JOBS_QUEUE,
                                    config.PASSKEY_READS_QUEUE) == []


def test_app_insights_accepts_only_entra_authenticated_telemetry() -> None:
    """App Insights is workspace-based with DisableLocalAuth; the app authenticates as its identity."""
    assert checks.check_monitoring(INFRA) == []


def test_key_vault_is_rbac_mode_and_recoverable() -> None:
    """Key Vault: RBAC authorization, soft delete, purge protection; secret values from secure params."""
    assert checks.check_key_vault(INFRA) == []


def test_role_assignments_are_narrow_and_for_a_service_principal() -> None:
    """Every role assignment: documented role, narrowest scope, guid(scope, principal, role), ServicePrincipal."""
    assert checks.check_role_assignments(INFRA) == []


def test_no_secret_or_key_anywhere_in_infra() -> None:
    """No listKeys, key-based connection string, secret-looking literal, literal secure default or secret
    in parameters; secret app settings are Key Vault references."""
    assert checks.check_no_secrets(INFRA) == []


def test_outputs_are_described_and_carry_no_secret() -> None:
    """Every output has a description and none exposes a secure param, key or connection string."""
    assert checks.check_outputs(INFRA) == []


def test_function_app_is_flex_python_311_and_always_ready() -> None:
    """FC1, Python 3.11, ≥ 1 always-ready HTTP instance, one user-assigned identity, HTTPS/TLS 1.2,
    FTP and basic-auth publishing off."""
    assert checks.check_function_app(INFRA) == []


def test_every_parameter_is_described_and_bounded() -> None:
    """Each param in every template has @description and length/value bounds (or @allowed)."""
    assert checks.check_parameters(INFRA) == []


def test_schedules_are_six_field_ncrontab_and_azd_defaults_match() -> None:
    """Schedule defaults have seconds (6 fields); azd's defaults equal main.bicep's."""
    assert checks.check_schedules(INFRA) == []


def test_graph_roles_granted_equal_the_documented_list() -> None:
    """For every mode/removal combination the templates grant exactly graph-permissions.json's selection."""
    assert checks.check_graph_permissions(INFRA) == []


# The rule of the brief and graph-contract.md, written out: audit → read-only policy roles;
# removeStalePasskeys false → passkey read only; User.Read.All, GroupMember.Read.All, Organization.Read.All
# (the tenant check) and AuditLog.Read.All (the registration report: the passkey holders index) always.
_ALWAYS = {"Policy.Read.All", "User.Read.All", "GroupMember.Read.All", "Organization.Read.All", "AuditLog.Read.All"}
_EXPECTED = {
    ("audit", False): _ALWAYS | {"Policy.Read.AuthenticationMethod", "UserAuthMethod-Passkey.Read.All"},
    ("audit", True): _ALWAYS | {"Policy.Read.AuthenticationMethod", "UserAuthMethod-Passkey.ReadWrite.All"},
    ("enforce", False): _ALWAYS | {"Policy.ReadWrite.AuthenticationMethod", "Policy.ReadWrite.ConditionalAccess",
                                   "UserAuthMethod-Passkey.Read.All"},
    ("enforce", True): _ALWAYS | {"Policy.ReadWrite.AuthenticationMethod", "Policy.ReadWrite.ConditionalAccess",
                                  "UserAuthMethod-Passkey.ReadWrite.All"},
}


@pytest.mark.parametrize(("mode", "remove"), sorted(_EXPECTED))
def test_graph_roles_follow_the_least_privilege_rule(mode: str, remove: bool) -> None:
    """Audit grants no policy write; keeping stale passkeys grants passkey read only; no Read next to ReadWrite."""
    granted = checks.granted_graph_roles(INFRA, mode, remove)
    assert granted == _EXPECTED[(mode, remove)]
    for role in granted:
        assert role.replace(".ReadWrite.", ".Read.") == role or role.replace(".ReadWrite.", ".Read.") not in granted


@pytest.mark.parametrize(("mode", "remove"), sorted(_EXPECTED))
def test_application_read_is_granted_only_on_opt_in(mode: str, remove: bool) -> None:
    """Application.Read.All (needed to write a CA policy naming application ids) only with grantApplicationRead."""
    assert "Application.Read.All" not in checks.granted_graph_roles(INFRA, mode, remove)
    opted = checks.granted_graph_roles(INFRA, mode, remove, grant_application_read=True)
    assert opted == _EXPECTED[(mode, remove)] | {"Application.Read.All"}


def test_deployment_doc_lists_the_graph_permissions() -> None:
    """docs/deployment.md's Graph table equals graph-permissions.json (role, when, feature, reason)."""
    assert checks.check_docs_graph_table(INFRA, REPO_ROOT / "docs" / "deployment.md") == []


def test_readme_permission_table_matches_the_documented_list() -> None:
    """The README shows a reviewer exactly the Graph permissions the templates grant, with reasons."""
    assert checks.check_docs_graph_table(INFRA, REPO_ROOT / "README.md") == []


def test_admin_routes_sit_behind_app_service_authentication() -> None:
    """authsettingsV2: on, 401 without a token, Entra tokens of this tenant for the API app registration
    (no client secret), only the self-authenticating paths excluded; the registration has the two app
    roles for users and applications, and assignment is required."""
    assert checks.check_app_service_auth(INFRA) == []


def test_excluded_paths_are_exactly_the_public_routes(functions) -> None:
    """What App Service Authentication lets through untokened is what the code treats as public (plus the
    ticket sub-paths and Event Grid's extension webhook), so no admin route is ever excluded."""
    from tests.functions.routes import ROUTE_ACCESS

    public = set()
    for name, fn in functions.items():
        trigger = next(b for b in fn.get_bindings_dict()["bindings"] if b["type"].endswith("Trigger"))
        if trigger["type"] == "httpTrigger" and ROUTE_ACCESS[name] == "public":
            public.add(f"/api/{trigger['route'].strip('/')}")
    assert checks.AUTH_EXCLUDED_PATHS == public | {"/api/tickets/*", "/runtime/webhooks/eventgrid"}


def test_the_app_roles_in_bicep_are_the_roles_the_code_checks() -> None:
    """The roles api-app.bicep defines are the ones shared/principal.py requires."""
    from shared.principal import ADMIN_ROLE, READER_ROLE

    assert checks.API_APP_ROLES == {ADMIN_ROLE, READER_ROLE}
