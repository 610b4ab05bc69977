// The Orders API's Azure resources: a Function App on Flex Consumption (Linux, custom
// handler), its storage reached through a managed identity (no keys anywhere), Application
// Insights on a Log Analytics workspace, and API Management in front of it with the API
// imported from openapi/openapi-3.0.json and the policy from apim/policy.xml.
//
//   az deployment group create -g <group> -f infra/main.bicep \
//     -p name=<prefix> apiClientId=<API app registration's client id> publisherEmail=<you>
//
// The code is published separately (func azure functionapp publish, see the README). Each
// property that is not self-explanatory names the documentation it follows.

targetScope = 'resourceGroup'

@description('Prefix of every resource name: 3 to 11 lower-case letters and digits.')
@minLength(3)
@maxLength(11)
param name string

param location string = resourceGroup().location

@description('Client id of the API\'s app registration in Entra ID: the aud of v2 access tokens.')
param apiClientId string

@description('App ID URI of the API\'s app registration: the aud of v1 tokens requested for it.')
param apiAppIdUri string = 'api://${apiClientId}'

@description('Entra ID tenant that issues the tokens.')
param tenantId string = tenant().tenantId

// rate-limit-by-key, used by apim/policy.xml, is available on Developer, Basic, Basic v2,
// Standard, Standard v2, Premium and Premium v2, not on Consumption (Learn: rate-limit-by-key
// policy, "Usage"). Basic v2 is the smallest tier with an SLA that has it, and v2 tiers deploy in
// minutes. Developer is cheaper for trying things out (no SLA).
@allowed([
  'BasicV2'
  'StandardV2'
  'Developer'
  'Basic'
  'Standard'
  'Premium'
])
param apimSku string = 'BasicV2'

param publisherEmail string
param publisherName string = 'Orders API'

// Flex Consumption: 512, 2048 or 4096 MB per instance; 40 to 1000 instances (Learn: Flex
// Consumption plan, "Instance memory" and "Scale").
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

var suffix = uniqueString(resourceGroup().id, name)
// Storage account names: 3 to 24 lower-case letters and digits (11 + 13).
var storageName = toLower('${name}${suffix}')
var appName = '${name}-api-${suffix}'
var deploymentContainer = 'app-package'
var loginEndpoint = environment().authentication.loginEndpoint

// Role definitions (Learn: Azure built-in roles). The Functions host needs Blob Data Owner for
// identity-based AzureWebJobsStorage (Learn: "Connecting to host storage with an identity"); the
// handler keeps orders in tables and export jobs on a queue.
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}

// A user-assigned identity exists before the app, so its role assignments are in place when the
// host first starts (and when listKeys below asks it for a key).
resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${name}-id-${suffix}'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: {
    name: 'Standard_LRS'
  }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // Everything authenticates with the identity; export links are user delegation SAS URLs.
    allowSharedKeyAccess: false
  }

  resource blobs 'blobServices' = {
    name: 'default'

    // Flex Consumption deploys the app package to a blob container that must already exist
    // (Learn: "Configure deployment settings" for Flex Consumption).
    resource packages 'containers' = {
      name: deploymentContainer
    }
  }

  resource queues 'queueServices' = {
    name: 'default'

    // export-worker/function.json's queueTrigger listens here.
    resource exportJobs 'queues' = {
      name: 'export-jobs'
    }
  }
}

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in items(roles): {
    name: guid(storage.id, identity.id, role.value)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role.value)
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${name}-logs-${suffix}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

// Workspace-based Application Insights (Learn: "Create a workspace-based resource").
resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${name}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
  }
}

// Flex Consumption: SKU FC1, Linux (reserved), one app per plan (Learn: "Flex Consumption plan
// hosting"; Azure-Samples/azure-functions-flex-consumption-samples, IaC/bicep).
resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${name}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
    }
    // functionAppConfig replaces FUNCTIONS_WORKER_RUNTIME, WEBSITE_RUN_FROM_PACKAGE and the
    // content-share settings, which Flex Consumption does not use (Learn: "App settings
    // reference", Flex Consumption plan deprecations).
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            // Case-sensitive value (Learn: Flex Consumption "Configure deployment settings").
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      // A custom handler. 'custom' is not in the Flex docs' language table; it is in the Flex
      // runtime stacks the platform lists (Get-AzFunctionAppFlexConsumptionRuntime -Runtime
      // Custom); check the version there for your region before deploying.
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
  dependsOn: [
    storageRoles
    storage::blobs::packages
  ]

  resource settings 'config' = {
    name: 'appsettings'
    properties: {
      // Identity-based host storage; the __accountName form exists for AzureWebJobsStorage only
      // (Learn: "App settings reference", AzureWebJobsStorage__*). The handler reads the same
      // settings for its own storage calls.
      AzureWebJobsStorage__accountName: storage.name
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identity.properties.clientId
      APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
      // Entra ID v2 tokens; the audience in both forms (client id and App ID URI).
      ORDERS_AUTH_ISSUER: '${loginEndpoint}${tenantId}/v2.0'
      ORDERS_AUTH_AUDIENCE: '${apiClientId},${apiAppIdUri}'
      ORDERS_LOG_FORMAT: 'json'
    }
  }
}

resource apim 'Microsoft.ApiManagement/service@2023-05-01-preview' = {
  name: '${name}-apim-${suffix}'
  location: location
  sku: {
    name: apimSku
    capacity: 1
  }
  properties: {
    publisherEmail: publisherEmail
    publisherName: publisherName
  }

  // The named values apim/policy.xml reads.
  resource openIdConfig 'namedValues' = {
    name: 'orders-openid-config-url'
    properties: {
      displayName: 'orders-openid-config-url'
      value: '${loginEndpoint}${tenantId}/v2.0/.well-known/openid-configuration'
    }
  }

  resource audience 'namedValues' = {
    name: 'orders-audience'
    properties: {
      displayName: 'orders-audience'
      value: apiClientId
    }
  }

  resource appIdUri 'namedValues' = {
    name: 'orders-app-id-uri'
    properties: {
      displayName: 'orders-app-id-uri'
      value: apiAppIdUri
    }
  }

  // Without /api: APIM appends the operation's URL template (/api/orders/...) to the backend
  // URL, and the API's own path suffix is not forwarded (Learn: "Import and publish", and
  // set-backend-service base-url).
  resource backendUrl 'namedValues' = {
    name: 'orders-backend-url'
    properties: {
      displayName: 'orders-backend-url'
      value: 'https://${app.properties.defaultHostName}'
    }
  }

  // The host's default function key (REST "Web Apps - List Host Keys"). It needs the Functions
  // host to answer; if it does not yet, publish the app and deploy the template again.
  resource functionKey 'namedValues' = {
    name: 'orders-function-key'
    properties: {
      displayName: 'orders-function-key'
      secret: true
      value: listKeys('${app.id}/host/default', '2024-04-01').functionKeys.default
    }
    dependsOn: [
      app::settings
    ]
  }

  resource api 'apis' = {
    name: 'orders'
    properties: {
      displayName: 'Orders API'
      path: 'orders'
      protocols: [
        'https'
      ]
      // The bearer token is the credential: no APIM subscription key on top of it.
      subscriptionRequired: false
      serviceUrl: 'https://${app.properties.defaultHostName}'
      // Inline OpenAPI JSON (ContentFormat "openapi+json"): the 3.0.3 rendering, since APIM's
      // import of 3.1 is limited (Learn: API import restrictions). It is over loadTextContent's
      // 131,072 characters, so it is read with loadJsonContent (1,048,576) and written back as
      // text (Learn: Bicep file functions); a test keeps it under that limit.
      format: 'openapi+json'
      value: string(loadJsonContent('../openapi/openapi-3.0.json'))
    }

    resource policy 'policies' = {
      name: 'policy'
      properties: {
        // policy.xml is a well-formed XML document (its expressions are XML-escaped), which is
        // what "xml" means; "rawxml" is for policies whose expressions are not escaped.
        format: 'xml'
        value: loadTextContent('../apim/policy.xml')
      }
      dependsOn: [
        openIdConfig
        audience
        appIdUri
        backendUrl
        functionKey
      ]
    }
  }
}

output functionAppName string = app.name
output functionAppHostName string = app.properties.defaultHostName
output apimName string = apim.name
output gatewayUrl string = apim.properties.gatewayUrl
output ordersUrl string = '${apim.properties.gatewayUrl}/orders/api/orders'
