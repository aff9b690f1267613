// The function app: Flex Consumption (FC1), Python 3.11, one user-assigned identity for everything
// (host storage, deployment package, app state, Key Vault references, App Insights, Graph).
// App settings: exactly the names shared.config.APP_SETTINGS lists (minus local-only ones) plus
// the host's own; tests/infra/test_settings_in_step.py keeps the two in step.

@minLength(2)
@maxLength(60)
@description('Name of the function app (its default host name is derived from it).')
param name string

@minLength(1)
@maxLength(60)
@description('Name of the Flex Consumption plan.')
param planName string

@minLength(1)
@description('Azure region of the plan and the app.')
param location string

@description('Tags applied to the plan and the app (the app also gets azd-service-name).')
param tags object = {}

@minLength(1)
@description('Resource id of the user-assigned managed identity.')
param identityId string

@minLength(36)
@maxLength(36)
@description('Client id of the user-assigned managed identity.')
param identityClientId string

@minLength(3)
@maxLength(24)
@description('Name of the storage account (host storage, deployment package, app state).')
param storageAccountName string

@minLength(3)
@maxLength(63)
@description('Blob container the plan deploys the app package from.')
param deploymentContainerName string

@minLength(1)
@maxLength(255)
@description('Name of the Application Insights component.')
param appInsightsName string

@minLength(3)
@maxLength(24)
@description('Name of the Key Vault holding the webhook secrets.')
param keyVaultName string

@minLength(1)
@maxLength(127)
@description('Key Vault secret holding the ticket webhook\'s HMAC secret.')
param ticketWebhookSecretName string

@minLength(1)
@maxLength(127)
@description('Key Vault secret holding the Graph subscription clientState.')
param graphClientStateName string

@minLength(36)
@maxLength(36)
@description('Entra tenant the app manages (TENANT_ID).')
param tenantId string

@allowed([
  'audit'
  'enforce'
])
@description('ENFORCEMENT_MODE: audit reports drift, enforce writes the desired policy.')
param enforcementMode string

@description('REMOVE_STALE_PASSKEYS: delete passkeys left stale by a UPN change.')
param removeStalePasskeys bool

@minValue(0)
@maxValue(100000)
@description('STALE_PASSKEY_REMOVAL_MAX_PER_RUN: passkeys one tracker run may delete; further flags wait for an approval.')
param staleRemovalMaxPerRun int

@description('ALLOW_ADHOC_DOCUMENTS: HTTP plan/verify may take a desired-state document in the body.')
param allowAdhocDocuments bool

@minLength(1)
@maxLength(260)
@description('POLICY_FILE: desired-state policy document, relative to the app root.')
param policyFile string

@minLength(11)
@maxLength(100)
@description('POLICY_SCHEDULE: NCRONTAB (6 fields, UTC) of the policy_enforcement timer.')
param policySchedule string

@minLength(11)
@maxLength(100)
@description('SWEEP_SCHEDULE: NCRONTAB (6 fields, UTC) of the delta_sweep timer (users/delta backstop).')
param sweepSchedule string

@minLength(11)
@maxLength(100)
@description('TRACKER_SCHEDULE: NCRONTAB (6 fields, UTC) of the reregistration_tracker timer (open UPN-change flags).')
param trackerSchedule string

@minLength(11)
@maxLength(100)
@description('SUBSCRIPTION_SCHEDULE: NCRONTAB (6 fields, UTC) of the subscription_manager timer.')
param subscriptionSchedule string

@minLength(11)
@maxLength(100)
@description('EVENTS_PURGE_SCHEDULE: NCRONTAB (6 fields, UTC) of the events_purge timer (expired idempotency keys).')
param eventsPurgeSchedule string

@minLength(36)
@maxLength(36)
@description('Client id of the API app registration (api-app.bicep): App Service Authentication accepts tokens issued for it.')
param apiClientId string

@minLength(8)
@maxLength(200)
@description('Application ID URI of the API app registration, also an accepted token audience.')
param apiIdentifierUri string

@minValue(1)
@maxValue(20)
@description('Always-ready instances of the HTTP group (Graph webhooks must answer within 3 s / 10 s).')
param httpAlwaysReady int = 1

@minValue(40)
@maxValue(1000)
@description('Most instances the app may scale out to.')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Memory per instance in MB.')
param instanceMemoryMB int = 2048

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        // Graph drops notifications from slow endpoints and validates a new subscription within
        // 10 s; a cold start can take longer, so the HTTP group always keeps a warm instance.
        alwaysReady: [
          {
            name: 'http'
            instanceCount: httpAlwaysReady
          }
        ]
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
  }
}

// The whole settings collection (a PUT): a setting missing here disappears on the next deploy.
// A separate resource so the webhook URLs can use the site's own default host name.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    // Host storage, identity-based (no connection string, no account key).
    AzureWebJobsStorage__accountName: storage.name
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    // Telemetry: Entra-authenticated ingestion (App Insights local auth is off).
    APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
    // App state: the STATE_STORAGE identity-based connection (code and the queue trigger).
    STATE_STORAGE__tableServiceUri: storage.properties.primaryEndpoints.table
    STATE_STORAGE__queueServiceUri: storage.properties.primaryEndpoints.queue
    STATE_STORAGE__credential: 'managedidentity'
    STATE_STORAGE__clientId: identityClientId
    // Graph and the tenant.
    TENANT_ID: tenantId
    AZURE_CLIENT_ID: identityClientId
    GRAPH_BASE_URL: 'https://graph.microsoft.com/v1.0'
    // Behaviour. Not string(bool): ARM renders a bool as 'True'.
    ENFORCEMENT_MODE: enforcementMode
    REMOVE_STALE_PASSKEYS: removeStalePasskeys ? 'true' : 'false'
    STALE_PASSKEY_REMOVAL_MAX_PER_RUN: string(staleRemovalMaxPerRun)
    ALLOW_ADHOC_DOCUMENTS: allowAdhocDocuments ? 'true' : 'false'
    POLICY_FILE: policyFile
    // Change notifications: Graph posts here; the clientState proves a post came from our subscription.
    NOTIFICATION_URL: 'https://${site.properties.defaultHostName}/api/graph/notifications'
    LIFECYCLE_NOTIFICATION_URL: 'https://${site.properties.defaultHostName}/api/graph/lifecycle'
    NOTIFICATION_CLIENT_STATE: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${graphClientStateName})'
    TICKET_WEBHOOK_SECRET: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${ticketWebhookSecretName})'
    // Timer schedules, read by the host through %NAME% binding expressions.
    POLICY_SCHEDULE: policySchedule
    SWEEP_SCHEDULE: sweepSchedule
    TRACKER_SCHEDULE: trackerSchedule
    EVENTS_PURGE_SCHEDULE: eventsPurgeSchedule
    SUBSCRIPTION_SCHEDULE: subscriptionSchedule
  }
}

// App Service Authentication: every request needs a Microsoft Entra token issued for the API app
// registration, except the paths that authenticate themselves (Graph's webhooks by clientState, the
// ticket webhook by HMAC, Event Grid's by the extension's system key) and the status-only health.
// Unauthenticated callers get 401 from the platform; the code then checks the app role the route
// needs from X-MS-CLIENT-PRINCIPAL (shared/principal.py), which the platform strips from incoming
// requests and sets itself. Token validation only: no client secret, no token store, no login flow.
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/api/health'
        '/api/graph/notifications'
        '/api/graph/lifecycle'
        '/api/tickets'
        '/api/tickets/*'
        '/runtime/webhooks/eventgrid'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: apiClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            apiClientId
            apiIdentifierUri
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

// Deployments go through Entra (azd / OneDeploy to the package container): no basic-auth
// publishing credentials for FTP or SCM.
resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

@description('Name of the function app.')
output name string = site.name

@description('Default host name of the function app.')
output defaultHostName string = site.properties.defaultHostName

@description('Resource id of the function app.')
output id string = site.id
