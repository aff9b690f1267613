// Every Azure role assignment of the managed identity, each on the narrowest scope its resource
// allows (docs/deployment.md, "Azure role assignments"). Named guid(scope, principal, role) so a
// redeploy finds the same assignment instead of failing on a duplicate.

@minLength(36)
@maxLength(36)
@description('Object id of the managed identity\'s service principal.')
param principalId string

@minLength(3)
@maxLength(24)
@description('Name of the storage account (host state, deployment package, app tables and queues).')
param storageAccountName string

@minLength(1)
@description('App tables: each gets its own Storage Table Data Contributor assignment.')
param tableNames array

@minLength(1)
@description('App queues: each gets its own Storage Queue Data Contributor assignment.')
param queueNames array

@minLength(1)
@maxLength(255)
@description('Name of the Application Insights component the identity publishes telemetry to.')
param appInsightsName string

@minLength(3)
@maxLength(24)
@description('Name of the Key Vault holding the secrets.')
param keyVaultName string

@minLength(1)
@description('Secrets the app reads through Key Vault references: each gets its own Key Vault Secrets User assignment.')
param secretNames array

// Built-in role definition ids (Azure built-in roles reference).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource secrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = [for secretName in secretNames: {
  parent: vault
  name: secretName
}]

// Host storage (AzureWebJobsStorage) creates its own containers (locks, keys) and Flex reads the
// deployment package: container creation needs the account, so this is the one account-wide grant.
// It also covers the deployment container; a container-scoped grant would add nothing.
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// The queue triggers (UPN changes, policy jobs), their poison queues and the app's producers: per queue.
resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (queueName, i) in queueNames: {
  name: guid(queues[i].id, principalId, roles.storageQueueDataContributor)
  scope: queues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

// The app's state tables: per table (the tables are created here, the app never creates one).
resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (tableName, i) in tableNames: {
  name: guid(tables[i].id, principalId, roles.storageTableDataContributor)
  scope: tables[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

// Key Vault references: read exactly the app's secrets, not the whole vault.
resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (secretName, i) in secretNames: {
  name: guid(secrets[i].id, principalId, roles.keyVaultSecretsUser)
  scope: secrets[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

// Entra-authenticated telemetry (APPLICATIONINSIGHTS_AUTHENTICATION_STRING) into this component only.
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

@description('Number of role assignments made (for a quick check after deployment).')
output assignmentCount int = 2 + length(queueNames) + length(tableNames) + length(secretNames)
