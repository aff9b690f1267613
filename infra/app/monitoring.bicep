// Log Analytics and a workspace-based Application Insights that accepts only Entra-authenticated
// telemetry (local auth off): the connection string's instrumentation key alone cannot ingest.

@minLength(4)
@maxLength(63)
@description('Name of the Log Analytics workspace.')
param logAnalyticsName string

@minLength(1)
@maxLength(255)
@description('Name of the Application Insights component.')
param appInsightsName string

@minLength(1)
@description('Azure region of the monitoring resources.')
param location string

@description('Tags applied to the monitoring resources.')
param tags object = {}

@minValue(30)
@maxValue(730)
@description('Days Log Analytics keeps data.')
param retentionInDays int = 30

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
  }
}

@description('Name of the Application Insights component (the app reads its connection string through an existing reference).')
output appInsightsName string = appInsights.name

@description('Resource id of the Application Insights component.')
output appInsightsId string = appInsights.id

@description('Resource id of the Log Analytics workspace.')
output logAnalyticsId string = logAnalytics.id
