//! Bearer tokens for identity-based connections (`AzureWebJobsStorage__accountName`): a managed
//! identity's token for `https://storage.azure.com/`, cached until shortly before it expires.
//!
//! The token comes from the platform's managed identity endpoint (App Service and Functions set
//! `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`; elsewhere the instance metadata service), which is
//! what `azure_identity`'s `ManagedIdentityCredential` calls as well; it is reached directly
//! here to keep the Azure SDK's dependency tree out of the build.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::store::StoreError;
use crate::telemetry;

/// Where bearer tokens come from; tests substitute their own.
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    async fn token(&self) -> Result<String, StoreError>;
}

const RESOURCE: &str = "https://storage.azure.com/";
/// Renew this long before expiry, so no request carries a token that expires in flight.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

pub struct ManagedIdentity {
    http: reqwest::Client,
    client_id: Option<String>,
    /// `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` when set (App Service, Functions).
    app_service: Option<(String, String)>,
    cached: Mutex<Option<(String, Instant)>>,
}

impl ManagedIdentity {
    pub fn from_env(client_id: Option<String>) -> Result<Self, String> {
        let endpoint = std::env::var("IDENTITY_ENDPOINT").ok();
        let header = std::env::var("IDENTITY_HEADER").ok();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the identity HTTP client: {e}"))?;
        Ok(Self {
            http,
            client_id,
            app_service: endpoint.zip(header),
            cached: Mutex::new(None),
        })
    }

    async fn fetch(&self) -> Result<(String, Instant), StoreError> {
        let (endpoint, version) = match &self.app_service {
            Some((endpoint, _)) => (endpoint.as_str(), "2019-08-01"),
            None => (
                "http://169.254.169.254/metadata/identity/oauth2/token",
                "2018-02-01",
            ),
        };
        let mut url = reqwest::Url::parse(endpoint)
            .map_err(|e| StoreError::BadResponse(format!("IDENTITY_ENDPOINT is not a URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("resource", RESOURCE)
            .append_pair("api-version", version);
        if let Some(id) = &self.client_id {
            url.query_pairs_mut().append_pair("client_id", id);
        }
        let request = match &self.app_service {
            Some((_, secret)) => self.http.get(url).header("X-IDENTITY-HEADER", secret),
            None => self.http.get(url).header("Metadata", "true"),
        };
        let span = telemetry::dependency_span("Managed identity", "identity", "GetToken");
        let response = request.send().await.map_err(|e| {
            telemetry::record_dependency_result(&span, None, false);
            StoreError::Unavailable(format!("managed identity endpoint: {e}"))
        })?;
        let status = response.status();
        telemetry::record_dependency_result(&span, Some(status.as_u16()), status.is_success());
        if !status.is_success() {
            return Err(StoreError::BadResponse(format!(
                "managed identity endpoint answered {status}"
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| StoreError::Unavailable(format!("managed identity token: {e}")))?;
        let body: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::BadResponse(format!("managed identity token: {e}")))?;
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| StoreError::BadResponse("no access_token".to_owned()))?;
        // `expires_in` is seconds (a string or a number, depending on the endpoint).
        let expires_in = body["expires_in"]
            .as_u64()
            .or_else(|| body["expires_in"].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(600);
        Ok((
            token.to_owned(),
            Instant::now() + Duration::from_secs(expires_in),
        ))
    }
}

#[async_trait]
impl TokenSource for ManagedIdentity {
    async fn token(&self) -> Result<String, StoreError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, expires)) = cached.as_ref()
            && Instant::now() + RENEW_BEFORE < *expires
        {
            return Ok(token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.0.clone();
        *cached = Some(fresh);
        Ok(token)
    }
}
