// The Entra app registration that stands for Passkey Guard's HTTP API, and its service principal,
// created with the Microsoft Graph Bicep extension. App Service Authentication (function.bicep)
// accepts only tokens issued for this app, and the code (shared/principal.py) checks its two app
// roles: PasskeyGuard.Reader to read flags, runs and reports, PasskeyGuard.Admin to plan and apply.
// Both can be assigned to people and to calling applications (docs/deployment.md). No client secret
// exists: an API that only validates tokens needs none. App role assignment is required, so only
// assigned callers can get a token for the API at all. The deployer needs an Entra role that can
// create app registrations (e.g. Application Administrator).
extension microsoftGraphV1

@minLength(3)
@maxLength(120)
@description('Unique name of the app registration (idempotent across deployments) and the last segment of its application ID URI.')
param uniqueName string

@minLength(1)
@maxLength(120)
@description('Display name of the app registration and its enterprise application in Entra ID.')
param displayName string

// Application ID URI in a form Entra accepts without a verified domain: api://<tenant id>/<name>.
var identifierUri = 'api://${tenant().tenantId}/${uniqueName}'
// One delegated scope, so a signed-in administrator's client can get a token for the API; what the
// caller may do is still decided by their app role. The Azure CLI is pre-authorized for it, so
// `az account get-access-token --resource <identifierUri>` works without a consent prompt.
var userScopeId = guid(uniqueName, 'user_impersonation')
var azureCliAppId = '04b07795-8ddb-461a-bbee-02f9e1bf7b46'

resource api 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  signInAudience: 'AzureADMyOrg'
  identifierUris: [
    identifierUri
  ]
  api: {
    // v2 tokens: audience is the client id, issuer login.microsoftonline.com/<tenant>/v2.0.
    requestedAccessTokenVersion: 2
    oauth2PermissionScopes: [
      {
        id: userScopeId
        value: 'user_impersonation'
        type: 'Admin'
        adminConsentDisplayName: 'Call Passkey Guard as the signed-in user'
        adminConsentDescription: 'Lets the client call the Passkey Guard API as the signed-in user; the user\'s app role decides what they may do.'
        isEnabled: true
      }
    ]
    preAuthorizedApplications: [
      {
        appId: azureCliAppId
        delegatedPermissionIds: [
          userScopeId
        ]
      }
    ]
  }
  appRoles: [
    {
      // guid() of fixed inputs: the same role id on every deployment, so assignments survive.
      id: guid(uniqueName, 'PasskeyGuard.Admin')
      value: 'PasskeyGuard.Admin'
      displayName: 'Passkey Guard administrator'
      description: 'Plan, apply and roll back the passkey policy, approve passkey removals, and everything the reader may do.'
      allowedMemberTypes: [
        'User'
        'Application'
      ]
      isEnabled: true
    }
    {
      id: guid(uniqueName, 'PasskeyGuard.Reader')
      value: 'PasskeyGuard.Reader'
      displayName: 'Passkey Guard reader'
      description: 'Read UPN-change flags, run history, compliance reports and the detailed health.'
      allowedMemberTypes: [
        'User'
        'Application'
      ]
      isEnabled: true
    }
  ]
}

resource apiPrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: api.appId
  appRoleAssignmentRequired: true
}

@description('Client (application) id of the API app registration: the audience App Service Authentication accepts.')
output appId string = api.appId

@description('Application ID URI of the API (az account get-access-token --resource <this>).')
output identifierUri string = identifierUri

@description('Object id of the API\'s service principal (the resource of appRoleAssignedTo grants).')
output servicePrincipalId string = apiPrincipal.id
