"""Each infra assertion fails when the template is broken: mutate a copy of infra/, run the same check."""
from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import bicep_checks as checks
import pytest
from bicep_checks import Mutate

from shared import config

STORAGE = "infra/app/storage.bicep"
MONITORING = "infra/app/monitoring.bicep"
KEYVAULT = "infra/app/keyvault.bicep"
RBAC = "infra/app/rbac.bicep"
FUNCTION = "infra/app/function.bicep"
GRAPH = "infra/app/graph-permissions.bicep"
API_APP = "infra/app/api-app.bicep"
IDENTITY = "infra/app/identity.bicep"
MAIN = "infra/main.bicep"
PARAMS = "infra/main.parameters.json"
PERMISSIONS = "infra/graph-permissions.json"
DOCS = "docs/deployment.md"

Check = Callable[[Path], list[str]]

#: (id, file, original text, mutated text, check, a substring one reported problem must contain)
MUTATIONS: list[tuple[str, str, str, str, Check, str]] = [
    # storage
    ("shared-keys-on", STORAGE, "allowSharedKeyAccess: false", "allowSharedKeyAccess: true",
     checks.check_storage_security, "allowSharedKeyAccess"),
    ("shared-keys-default", STORAGE, "    allowSharedKeyAccess: false\n", "",
     checks.check_storage_security, "allowSharedKeyAccess"),
    ("tls-1.0", STORAGE, "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'",
     checks.check_storage_security, "minimumTlsVersion"),
    ("public-blobs", STORAGE, "allowBlobPublicAccess: false", "allowBlobPublicAccess: true",
     checks.check_storage_security, "allowBlobPublicAccess"),
    ("oauth-not-default", STORAGE, "defaultToOAuthAuthentication: true", "defaultToOAuthAuthentication: false",
     checks.check_storage_security, "defaultToOAuthAuthentication"),
    ("http-allowed", STORAGE, "supportsHttpsTrafficOnly: true", "supportsHttpsTrafficOnly: false",
     checks.check_storage_security, "supportsHttpsTrafficOnly"),
    ("public-container", STORAGE, "publicAccess: 'None'", "publicAccess: 'Blob'",
     checks.check_storage_security, "publicAccess"),
    # monitoring
    ("appinsights-local-auth", MONITORING, "DisableLocalAuth: true", "DisableLocalAuth: false",
     checks.check_monitoring, "DisableLocalAuth"),
    ("appinsights-classic", MONITORING, "    WorkspaceResourceId: logAnalytics.id\n", "",
     checks.check_monitoring, "workspace-based"),
    ("telemetry-key-auth", FUNCTION, "Authorization=AAD'", "Authorization=Key'",
     checks.check_monitoring, "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"),
    # key vault
    ("vault-access-policies", KEYVAULT, "enableRbacAuthorization: true", "enableRbacAuthorization: false",
     checks.check_key_vault, "enableRbacAuthorization"),
    ("vault-purgeable", KEYVAULT, "    enablePurgeProtection: true\n", "",
     checks.check_key_vault, "enablePurgeProtection"),
    ("secret-literal", KEYVAULT, "value: ticketWebhookSecret", "value: 'hunter2-but-longer'",
     checks.check_key_vault, "@secure() parameter"),
    # role assignments
    ("table-role-on-account", RBAC,
     "  name: guid(tables[i].id, principalId, roles.storageTableDataContributor)\n  scope: tables[i]\n",
     "  name: guid(storage.id, principalId, roles.storageTableDataContributor)\n  scope: storage\n",
     checks.check_role_assignments, "Storage Table Data Contributor must be scoped"),
    ("secret-role-on-vault", RBAC,
     "  name: guid(secrets[i].id, principalId, roles.keyVaultSecretsUser)\n  scope: secrets[i]\n",
     "  name: guid(vault.id, principalId, roles.keyVaultSecretsUser)\n  scope: vault\n",
     checks.check_role_assignments, "Key Vault Secrets User must be scoped"),
    ("role-on-resource-group", RBAC, "  scope: appInsights\n", "  scope: resourceGroup()\n",
     checks.check_role_assignments, "scope must name a resource"),
    ("role-without-scope", RBAC, "  scope: storage\n", "",
     checks.check_role_assignments, "scope must name a resource"),
    ("role-for-a-user", RBAC, "principalType: 'ServicePrincipal'", "principalType: 'User'",
     checks.check_role_assignments, "principalType"),
    ("role-name-not-from-scope", RBAC, "name: guid(storage.id, principalId, roles.storageBlobDataOwner)",
     "name: guid(resourceGroup().id, principalId, roles.storageBlobDataOwner)",
     checks.check_role_assignments, "name must start with the scope's id"),
    ("undocumented-role", RBAC, "monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'",
     "monitoringMetricsPublisher: 'b24988ac-6180-42a0-ab88-20f7382dd24c'",
     checks.check_role_assignments, "is not a documented role"),
    ("role-at-subscription", MAIN, "// --- outputs",
     "resource broad 'Microsoft.Authorization/roleAssignments@2022-04-01' = {\n"
     "  name: guid(subscription().id, identity.name, 'owner')\n  properties: {\n"
     "    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', "
     "'b7e6dc6d-f1e8-4753-8033-0f276bb0955b')\n    principalId: identity.outputs.principalId\n"
     "    principalType: 'ServicePrincipal'\n  }\n}\n\n// --- outputs",
     checks.check_role_assignments, "main.bicep:broad: scope must name a resource"),
    # secrets
    ("listkeys-connection-string", FUNCTION, "AzureWebJobsStorage__accountName: storage.name",
     "AzureWebJobsStorage: 'DefaultEndpointsProtocol=https;AccountName=${storage.name};"
     "AccountKey=${storage.listKeys().keys[0].value}'",
     checks.check_no_secrets, "listkeys"),
    ("secure-default-literal", MAIN, "param ticketWebhookSecret string = newGuid()",
     "param ticketWebhookSecret string = 'correct-horse-battery-staple'",
     checks.check_no_secrets, "not newGuid()"),
    ("secret-in-parameters-file", PARAMS, "$(secretOrRandomPassword ${AZURE_KEY_VAULT_NAME} graph-client-state)",
     "plain text client state", checks.check_no_secrets, "graphClientState must come from azd"),
    ("secret-setting-not-a-reference", FUNCTION,
     "TICKET_WEBHOOK_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${ticketWebhookSecretName})'",
     "TICKET_WEBHOOK_SECRET: ticketWebhookSecretName", checks.check_no_secrets, "TICKET_WEBHOOK_SECRET"),
    ("no-key-vault-reference-identity", FUNCTION, "    keyVaultReferenceIdentity: identityId\n", "",
     checks.check_no_secrets, "keyVaultReferenceIdentity"),
    # outputs
    ("output-secure-param", MAIN, "// --- outputs",
     "@description('State.')\noutput state string = graphClientState\n\n// --- outputs",
     checks.check_outputs, "@secure() parameter"),
    ("output-connection-string", MONITORING, "@description('Resource id of the Log Analytics workspace.')",
     "@description('Telemetry target.')\noutput telemetry string = appInsights.properties.ConnectionString\n\n"
     "@description('Resource id of the Log Analytics workspace.')",
     checks.check_outputs, "connection string"),
    ("output-undescribed", MAIN, "@description('Name of the function app.')\n", "",
     checks.check_outputs, "AZURE_FUNCTION_APP_NAME has no @description"),
    # function app
    ("always-ready-zero", FUNCTION, "instanceCount: httpAlwaysReady", "instanceCount: 0",
     checks.check_function_app, "alwaysReady"),
    ("always-ready-may-be-zero", FUNCTION, "@minValue(1)\n@maxValue(20)\n@description('Always-ready",
     "@minValue(0)\n@maxValue(20)\n@description('Always-ready", checks.check_function_app, "alwaysReady"),
    ("always-ready-not-http", FUNCTION, "name: 'http'", "name: 'durable'", checks.check_function_app, "alwaysReady"),
    ("main-always-ready-may-be-zero", MAIN, "@minValue(1)\n@maxValue(20)\n@description('Always-ready",
     "@minValue(0)\n@maxValue(20)\n@description('Always-ready", checks.check_function_app, "httpAlwaysReady"),
    ("python-3.12", FUNCTION, "version: '3.11'", "version: '3.12'", checks.check_function_app, "python 3.11"),
    ("http-allowed-app", FUNCTION, "httpsOnly: true", "httpsOnly: false", checks.check_function_app, "httpsOnly"),
    ("ftps-on", FUNCTION, "ftpsState: 'Disabled'", "ftpsState: 'FtpsOnly'", checks.check_function_app, "ftpsState"),
    ("app-tls-1.0", FUNCTION, "      minTlsVersion: '1.2'", "      minTlsVersion: '1.0'",
     checks.check_function_app, "minTlsVersion"),
    ("two-identities", FUNCTION, "      '${identityId}': {}\n",
     "      '${identityId}': {}\n      '${planName}': {}\n", checks.check_function_app, "one user-assigned identity"),
    ("system-identity", FUNCTION, "type: 'UserAssigned'\n", "type: 'SystemAssigned, UserAssigned'\n",
     checks.check_function_app, "one user-assigned identity"),
    ("basic-auth-on", FUNCTION, "allow: false", "allow: true", checks.check_function_app, "(ftp)"),
    ("consumption-plan", FUNCTION, "name: 'FC1'", "name: 'Y1'", checks.check_function_app, "FC1"),
    ("package-by-key", FUNCTION, "type: 'UserAssignedIdentity'", "type: 'StorageAccountConnectionString'",
     checks.check_function_app, "deployment container"),
    # Graph permissions
    ("graph-role-added-in-main", MAIN,
     "var graphRoles = map(filter(graphPermissions.roles, p => contains(activeGraphConditions, p.when)), p => p.role)",
     "var graphRoles = union(['Directory.Read.All'], map(filter(graphPermissions.roles, "
     "p => contains(activeGraphConditions, p.when)), p => p.role))",
     checks.check_graph_permissions, "Directory.Read.All"),
    ("graph-role-extra-resource", GRAPH, "@description('Values of the Graph application permissions granted.')",
     "resource extra 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {\n  principalId: principalId\n"
     "  resourceId: graph.id\n  appRoleId: filter(graph.appRoles, r => r.value == 'Directory.Read.All')[0].id\n}\n\n"
     "@description('Values of the Graph application permissions granted.')",
     checks.check_graph_permissions, "exactly one Microsoft.Graph/appRoleAssignedTo"),
    ("graph-removal-always", MAIN, "  removeStalePasskeys ? 'removeStalePasskeys' : 'keepStalePasskeys'\n",
     "  'removeStalePasskeys'\n", checks.check_graph_permissions, "removeStalePasskeys=False, grantApplicationRead"),
    ("graph-application-read-always", MAIN, "  grantApplicationRead ? 'readApplications' : 'always'\n",
     "  'readApplications'\n", checks.check_graph_permissions, "grantApplicationRead=False: granted"),
    ("graph-write-in-audit", MAIN, "  enforcementMode\n", "  'enforce'\n",
     checks.check_graph_permissions, "enforcementMode=audit"),
    ("graph-role-guid", GRAPH, "appRoleId: filter(graph.appRoles, appRole => appRole.value == role)[0].id",
     "appRoleId: '11111111-2222-3333-4444-555555555555'", checks.check_graph_permissions, "appRoleId must be"),
    ("graph-wrong-resource-app", GRAPH, "appId: '00000003-0000-0000-c000-000000000000'",
     "appId: '00000002-0000-0000-c000-000000000000'", checks.check_graph_permissions, "Microsoft Graph service"),
    ("graph-list-unexplained", PERMISSIONS, '"feature": "upn",\n      "reason": "Users delta query',
     '"feature": "upn",\n      "reason": "",\n      "was": "Users delta query',
     checks.check_graph_permissions, "User.Read.All has no reason"),
    ("graph-list-unknown-when", PERMISSIONS, '"when": "always"', '"when": "sometimes"',
     checks.check_graph_permissions, "unknown when"),
    ("graph-list-not-loaded", MAIN, "loadJsonContent('graph-permissions.json')", "loadJsonContent('other.json')",
     checks.check_graph_permissions, "loadJsonContent"),
    # App Service Authentication and the API app registration
    ("auth-off", FUNCTION, "    platform: {\n      enabled: true\n", "    platform: {\n      enabled: false\n",
     checks.check_app_service_auth, "platform.enabled"),
    ("auth-optional", FUNCTION, "requireAuthentication: true", "requireAuthentication: false",
     checks.check_app_service_auth, "requireAuthentication"),
    ("auth-anonymous-allowed", FUNCTION, "unauthenticatedClientAction: 'Return401'",
     "unauthenticatedClientAction: 'AllowAnonymous'", checks.check_app_service_auth, "unauthenticatedClientAction"),
    ("auth-admin-route-excluded", FUNCTION, "        '/api/tickets/*'\n",
     "        '/api/tickets/*'\n        '/api/policy/*'\n", checks.check_app_service_auth, "/api/policy/*"),
    ("auth-webhook-not-excluded", FUNCTION, "        '/api/graph/notifications'\n", "",
     checks.check_app_service_auth, "lacks /api/graph/notifications"),
    ("auth-client-secret", FUNCTION, "          clientId: apiClientId\n",
     "          clientId: apiClientId\n          clientSecretSettingName: 'API_SECRET'\n",
     checks.check_app_service_auth, "no client secret"),
    ("auth-any-tenant", FUNCTION, "${tenant().tenantId}/v2.0'", "common/v2.0'",
     checks.check_app_service_auth, "openIdIssuer"),
    ("auth-wrong-audience", FUNCTION, "          allowedAudiences: [\n            apiClientId\n",
     "          allowedAudiences: [\n", checks.check_app_service_auth, "allowedAudiences"),
    ("auth-token-store", FUNCTION, "      tokenStore: {\n        enabled: false",
     "      tokenStore: {\n        enabled: true", checks.check_app_service_auth, "token store"),
    ("auth-not-wired", MAIN, "    apiClientId: apiApp.outputs.appId\n", "    apiClientId: identity.outputs.clientId\n",
     checks.check_app_service_auth, "appId"),
    ("role-users-only", API_APP, "        'User'\n        'Application'\n      ]\n      isEnabled: true\n    }\n    {",
     "        'User'\n      ]\n      isEnabled: true\n    }\n    {", checks.check_app_service_auth,
     "PasskeyGuard.Admin: allowedMemberTypes"),
    ("role-missing", API_APP, "value: 'PasskeyGuard.Reader'", "value: 'PasskeyGuard.Viewer'",
     checks.check_app_service_auth, "appRoles must be exactly"),
    ("role-id-changes", API_APP, "id: guid(uniqueName, 'PasskeyGuard.Reader')", "id: newGuid()",
     checks.check_app_service_auth, "id must be guid"),
    ("assignment-not-required", API_APP, "appRoleAssignmentRequired: true", "appRoleAssignmentRequired: false",
     checks.check_app_service_auth, "appRoleAssignmentRequired"),
    ("api-multi-tenant", API_APP, "signInAudience: 'AzureADMyOrg'", "signInAudience: 'AzureADMultipleOrgs'",
     checks.check_app_service_auth, "signInAudience"),
    # parameters and schedules
    ("param-undescribed", IDENTITY, "@description('Name of the user-assigned managed identity.')\n", "",
     checks.check_parameters, "param name has no @description"),
    ("param-unbounded", IDENTITY, "@minLength(3)\n@maxLength(128)\n", "", checks.check_parameters, "unbounded"),
    ("schedule-five-fields", MAIN, "param sweepSchedule string = '0 */15 * * * *'",
     "param sweepSchedule string = '*/15 * * * *'", checks.check_schedules, "sweepSchedule"),
    ("azd-default-drift", PARAMS, "${POLICY_SCHEDULE=0 0 * * * *}", "${POLICY_SCHEDULE=0 5 * * * *}",
     checks.check_schedules, "policySchedule"),
]


@pytest.mark.parametrize(("file", "old", "new", "check", "expected"),
                         [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_mutation_is_reported(mutate: Mutate, file: str, old: str, new: str, check: Check, expected: str) -> None:
    """Breaking one property of a copy of infra/ makes its check report a problem that names it."""
    assert check(checks.INFRA_DIR) == [], "the check must pass on the real templates first"
    infra = mutate(file, old, new)
    assert checks.pycep_parse_errors(infra) == [], "a mutation must change meaning, not break the syntax"
    problems = check(infra)
    assert any(expected in problem for problem in problems), problems


def test_state_table_renamed_is_reported(mutate: Mutate) -> None:
    """A table or queue name the code does not use fails the names check."""
    infra = mutate(MAIN, "  'flags'\n", "  'flag'\n")
    infra = mutate(MAIN, "  'upn-changes-poison'\n", "  'upn-poison'\n")
    problems = checks.check_state_names(infra, config.QUEUE_NAME, config.POLICY_JOBS_QUEUE, config.PASSKEY_READS_QUEUE)
    assert any("tableNames" in p for p in problems) and any("queueNames" in p for p in problems)


def test_secret_looking_literal_is_reported(mutate: Mutate) -> None:
    """A key-like literal (here random hex, made at run time) anywhere in infra/ is reported."""
    token = secrets.token_hex(32)
    infra = mutate(MAIN, "  'azd-env-name': environmentName\n",
                   f"  'azd-env-name': environmentName\n  seed: '{token}'\n")
    assert any("secret-looking literal" in p for p in checks.check_no_secrets(infra))


def test_unparseable_template_is_a_finding_not_a_pass(mutate: Mutate) -> None:
    """When pycep cannot parse a template, every check reports it instead of passing vacuously."""
    infra = mutate(STORAGE, "resource storage 'Microsoft.Storage", "resource storage = 'Microsoft.Storage")
    for check in (checks.check_storage_security, checks.check_role_assignments, checks.check_outputs):
        assert any("cannot parse" in p for p in check(infra))


def test_graph_roles_granted_change_with_the_mutated_rule(mutate: Mutate) -> None:
    """Granting write in audit mode is visible in the evaluated role set, not only as a message."""
    infra = mutate(MAIN, "  enforcementMode\n", "  'enforce'\n")
    granted = checks.granted_graph_roles(infra, "audit", False)
    assert "Policy.ReadWrite.ConditionalAccess" in granted


def test_docs_table_drift_is_reported(mutate: Mutate) -> None:
    """A Graph permission missing from docs/deployment.md's table, or a doc-only row, is reported."""
    infra = mutate(DOCS, "| `GroupMember.Read.All` |", "| `Group.Read.All` |")
    problems = checks.check_docs_graph_table(infra, infra.parent / DOCS)
    assert any("GroupMember.Read.All" in p for p in problems) and any("Group.Read.All (always)" in p for p in problems)
