// The app's one user-assigned managed identity: storage, App Insights, Key Vault and Graph all
// authorize this principal, so no keys or client secrets exist anywhere.

@minLength(3)
@maxLength(128)
@description('Name of the user-assigned managed identity.')
param name string

@minLength(1)
@description('Azure region of the identity.')
param location string

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource id of the identity (for the app\'s identity block and Key Vault references).')
output id string = identity.id

@description('Name of the identity.')
output name string = identity.name

@description('Client (application) id of the identity: the app\'s AZURE_CLIENT_ID.')
output clientId string = identity.properties.clientId

@description('Object id of the identity\'s service principal: the principal of every role assignment.')
output principalId string = identity.properties.principalId
