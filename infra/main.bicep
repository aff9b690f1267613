// Passkey Guard: a Python 3.11 function app on Flex Consumption that keeps an Entra tenant's passkey
// (FIDO2) policy as decided and flags users whose UPN changed. Deploy with `azd up` or
// `az deployment sub create` (docs/deployment.md). Everything authenticates with one user-assigned
// managed identity: no storage keys, no App Insights keys, no client secrets.
targetScope = 'subscription'

// --- environment ---------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds the resource token so names are unique and repeatable.')
param environmentName string

@minLength(1)
@maxLength(40)
@description('Azure region for every resource; it must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@minLength(0)
@maxLength(90)
@description('Resource group to create or update; empty means rg-<environmentName>.')
param resourceGroupName string = ''

// The tenant the app manages is the deployment's own: its managed identity, Graph app roles and Key Vault live
// there, so no parameter may name another.
var tenantId = tenant().tenantId

// --- behaviour -----------------------------------------------------------------------------------

@allowed([
  'audit'
  'enforce'
])
@description('audit reports policy drift and writes no policy; enforce writes the desired policy. Also selects read-only or read-write Graph policy permissions (infra/graph-permissions.json). Stale-passkey removal is the separate removeStalePasskeys switch.')
param enforcementMode string = 'audit'

@description('True lets the app delete passkeys left stale by a UPN change and grants UserAuthMethod-Passkey.ReadWrite.All; false only flags them (UserAuthMethod-Passkey.Read.All).')
param removeStalePasskeys bool = false

@minValue(0)
@maxValue(100000)
@description('Passkeys one tracker run may delete (removeStalePasskeys true); above it, flags wait for an administrator\'s approval (POST /api/flags/approve-removal or python -m shared flags approve-removal). 0 makes every removal wait.')
param staleRemovalMaxPerRun int = 25

@description('True grants Application.Read.All, which Graph needs to create or update a Conditional Access policy that names application ids (conditionalAccess.includeApplications other than All, Office365, MicrosoftAdminPortals). Off by default; without it the app refuses such a write and names the permission.')
param grantApplicationRead bool = false

@description('True lets POST /api/policy/plan and /api/policy/verify take a desired-state document in the request body; false (the default) plans only from policyFile.')
param allowAdhocDocuments bool = false

@minLength(1)
@maxLength(260)
@description('Path of the desired-state policy document, relative to the app root.')
param policyFile string = 'policy/desired-state.json'

// --- schedules (NCRONTAB, six fields with seconds, UTC) ------------------------------------------

@minLength(11)
@maxLength(100)
@description('NCRONTAB schedule (6 fields, UTC) of the policy_enforcement timer (verify in audit mode; plan and apply when safe in enforce mode); hourly by default.')
param policySchedule string = '0 0 * * * *'

@minLength(11)
@maxLength(100)
@description('NCRONTAB schedule (6 fields, UTC) of the delta_sweep timer (users/delta backstop that queues UPN changes); every 15 minutes by default.')
param sweepSchedule string = '0 */15 * * * *'

@minLength(11)
@maxLength(100)
@description('NCRONTAB schedule (6 fields, UTC) of the reregistration_tracker timer (moves open UPN-change flags on; removes stale passkeys when enabled); every 30 minutes by default.')
param trackerSchedule string = '0 */30 * * * *'

@minLength(11)
@maxLength(100)
@description('NCRONTAB schedule (6 fields, UTC) of the subscription_manager timer (creates, renews and reauthorizes the Graph /users subscription); every 6 hours by default.')
param subscriptionSchedule string = '0 0 */6 * * *'

@minLength(11)
@maxLength(100)
@description('NCRONTAB schedule (6 fields, UTC) of the events_purge timer (deletes expired idempotency keys from the events table, which Table Storage never expires); daily at 03:30 UTC by default.')
param eventsPurgeSchedule string = '0 30 3 * * *'

// --- hosting -------------------------------------------------------------------------------------

@minValue(1)
@maxValue(20)
@description('Always-ready instances of the HTTP group; at least 1 so Graph webhook validation (10 s) and acknowledgements (3 s) never wait for a cold start.')
param httpAlwaysReady int = 1

@minValue(40)
@maxValue(1000)
@description('Most instances the app may scale out to (Flex Consumption allows 40 to 1,000).')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Memory per instance in MB (Flex Consumption sizes); 2,048 MB gives one vCPU.')
param instanceMemoryMB int = 2048

@allowed([
  'Standard_LRS'
  'Standard_ZRS'
])
@description('Replication of the storage account (host state, app tables and queues). ZRS where the region has availability zones.')
param storageSkuName string = 'Standard_LRS'

// --- secrets: values are generated, written to Key Vault, and never output ----------------------

@secure()
@minLength(12)
@maxLength(128)
@description('HMAC secret of the ticket webhook, stored in Key Vault. Leave unset: a new random value is generated (azd keeps the stored one, see main.parameters.json).')
param ticketWebhookSecret string = newGuid()

@secure()
@minLength(12)
@maxLength(128)
@description('clientState of the Graph change-notification subscription (Graph allows 128 characters), stored in Key Vault. Leave unset to generate one.')
param graphClientState string = newGuid()

@secure()
@minLength(36)
@maxLength(36)
@description('Leave unset. Random per deployment: pads a secret above shorter than 32 characters (azd generates 15 on the first provision), since the app treats a shorter secret as missing. Later provisions read the padded value back from the vault and keep it.')
param secretPadding string = newGuid()

// --- names ---------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var names = {
  resourceGroup: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  identity: 'id-${resourceToken}'
  logAnalytics: 'log-${resourceToken}'
  appInsights: 'appi-${resourceToken}'
  storage: 'st${resourceToken}'
  keyVault: 'kv-${resourceToken}'
  plan: 'plan-${resourceToken}'
  functionApp: 'func-${resourceToken}'
  apiApp: 'passkey-guard-${resourceToken}'
}

// The app's state lives in these tables and queues; the code uses exactly these names
// (shared.config.QUEUE_NAME, POLICY_JOBS_QUEUE and PASSKEY_READS_QUEUE; each poison queue is the host's <queue>-poison).
var tableNames = [
  'runs'
  'plans'
  'flags'
  'snapshots'
  'checkpoints'
  'events'
  'holders'
]
var queueNames = [
  'upn-changes'
  'upn-changes-poison'
  'policy-jobs'
  'policy-jobs-poison'
  'passkey-reads'
  'passkey-reads-poison'
]
var deploymentContainerName = 'app-package'
var secretNames = {
  ticketWebhook: 'ticket-webhook-secret'
  graphClientState: 'graph-client-state'
}

// --- Graph permissions: the entries of infra/graph-permissions.json whose `when` is active -------

var graphPermissions = loadJsonContent('graph-permissions.json')
var activeGraphConditions = [
  'always'
  enforcementMode
  removeStalePasskeys ? 'removeStalePasskeys' : 'keepStalePasskeys'
  grantApplicationRead ? 'readApplications' : 'always'
]
var graphRoles = map(filter(graphPermissions.roles, p => contains(activeGraphConditions, p.when)), p => p.role)

// --- resources -----------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: names.resourceGroup
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: names.storage
    location: location
    tags: tags
    skuName: storageSkuName
    tableNames: tableNames
    queueNames: queueNames
    deploymentContainerName: deploymentContainerName
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: names.keyVault
    location: location
    tags: tags
    tenantId: tenantId
    ticketWebhookSecretName: secretNames.ticketWebhook
    ticketWebhookSecret: length(ticketWebhookSecret) >= 32 ? ticketWebhookSecret : '${ticketWebhookSecret}${replace(guid(secretPadding, 'ticketWebhookSecret'), '-', '')}'
    graphClientStateName: secretNames.graphClientState
    graphClientState: length(graphClientState) >= 32 ? graphClientState : '${graphClientState}${replace(guid(secretPadding, 'graphClientState'), '-', '')}'
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    tableNames: tableNames
    queueNames: queueNames
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    secretNames: [
      secretNames.ticketWebhook
      secretNames.graphClientState
    ]
  }
}

module graphAccess 'app/graph-permissions.bicep' = {
  name: 'graph-permissions'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    roles: graphRoles
  }
}

// The API's app registration with the PasskeyGuard.Admin and PasskeyGuard.Reader app roles.
module apiApp 'app/api-app.bicep' = {
  name: 'api-app'
  scope: rg
  params: {
    uniqueName: names.apiApp
    displayName: 'Passkey Guard (${environmentName})'
  }
}

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: keyVault.outputs.name
    ticketWebhookSecretName: secretNames.ticketWebhook
    graphClientStateName: secretNames.graphClientState
    tenantId: tenantId
    enforcementMode: enforcementMode
    removeStalePasskeys: removeStalePasskeys
    staleRemovalMaxPerRun: staleRemovalMaxPerRun

    allowAdhocDocuments: allowAdhocDocuments
    policyFile: policyFile
    policySchedule: policySchedule
    sweepSchedule: sweepSchedule
    trackerSchedule: trackerSchedule
    subscriptionSchedule: subscriptionSchedule
    eventsPurgeSchedule: eventsPurgeSchedule
    httpAlwaysReady: httpAlwaysReady
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    apiClientId: apiApp.outputs.appId
    apiIdentifierUri: apiApp.outputs.identifierUri
  }
  // The host, the deployment and the Key Vault references all fail until the grants exist.
  dependsOn: [
    rbac
  ]
}

// --- outputs (names and ids only; azd stores them in the environment) ---------------------------

@description('Region the resources were deployed to.')
output AZURE_LOCATION string = location

@description('Entra tenant the app manages.')
output AZURE_TENANT_ID string = tenantId

@description('Resource group holding every resource.')
output AZURE_RESOURCE_GROUP string = rg.name

@description('Name of the function app.')
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name

@description('Default host name of the function app; the Graph webhooks are under https://<host>/api/graph/.')
output AZURE_FUNCTION_APP_HOSTNAME string = functionApp.outputs.defaultHostName

@description('Object (principal) id of the managed identity: the service principal holding the Graph permissions.')
output AZURE_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId

@description('Client id of the managed identity (the app\'s AZURE_CLIENT_ID).')
output AZURE_IDENTITY_CLIENT_ID string = identity.outputs.clientId

@description('Name of the Key Vault holding the webhook secrets; main.parameters.json reads it back so azd keeps the stored values.')
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name

@description('Name of the storage account (host state, app tables and queues).')
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name

@description('Client id of the API app registration whose app roles (PasskeyGuard.Admin, PasskeyGuard.Reader) the admin routes require.')
output AZURE_API_CLIENT_ID string = apiApp.outputs.appId

@description('Application ID URI of the API: az account get-access-token --resource <this> gets a token for the admin routes.')
output AZURE_API_IDENTIFIER_URI string = apiApp.outputs.identifierUri

@description('Object id of the API\'s service principal (Enterprise applications), where the app roles are assigned.')
output AZURE_API_SERVICE_PRINCIPAL_ID string = apiApp.outputs.servicePrincipalId

@description('Microsoft Graph application permissions granted to the managed identity.')
output GRAPH_PERMISSIONS array = graphRoles
