// Microsoft Graph application permissions (app roles) for the managed identity, granted with the
// Microsoft Graph Bicep extension: admin consent happens here, no client secret exists. The role
// list comes from infra/graph-permissions.json (filtered by main.bicep); each role is resolved
// by its value in the Graph service principal's appRoles, so no permission GUID is hard-coded.
// The deployer needs an Entra role that can grant app roles (e.g. Privileged Role Administrator).
extension microsoftGraphV1

@minLength(36)
@maxLength(36)
@description('Object id of the managed identity\'s service principal (the principal receiving the roles).')
param principalId string

@minLength(1)
@description('Values of the Graph application permissions to grant, e.g. User.Read.All.')
param roles array

// Microsoft Graph's well-known application id.
resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: '00000003-0000-0000-c000-000000000000'
}

resource grants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [for role in roles: {
  principalId: principalId
  resourceId: graph.id
  appRoleId: filter(graph.appRoles, appRole => appRole.value == role)[0].id
}]

@description('Values of the Graph application permissions granted.')
output grantedRoles array = roles
