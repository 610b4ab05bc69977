//! Bearer tokens for identity-based connections (`AzureWebJobsStorage__accountName`): the
//! managed identity's token for Azure Storage, from `azure_identity` (which caches it and
//! renews it before it expires).

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};

use crate::store::StoreError;
use crate::telemetry;

/// Where bearer tokens come from; tests substitute their own.
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    async fn token(&self) -> Result<String, StoreError>;
}

const SCOPE: &str = "https://storage.azure.com/.default";

pub struct ManagedIdentity {
    credential: Arc<ManagedIdentityCredential>,
}

impl ManagedIdentity {
    /// The system-assigned identity, or the user-assigned one with `client_id`. Reads the
    /// platform's settings only: no network call until the first token is needed.
    pub fn new(client_id: Option<String>) -> Result<Self, String> {
        let options = ManagedIdentityCredentialOptions {
            user_assigned_id: client_id.map(UserAssignedId::ClientId),
            ..ManagedIdentityCredentialOptions::default()
        };
        let credential = ManagedIdentityCredential::new(Some(options))
            .map_err(|e| format!("managed identity is not available: {e}"))?;
        Ok(Self { credential })
    }
}

#[async_trait]
impl TokenSource for ManagedIdentity {
    async fn token(&self) -> Result<String, StoreError> {
        let span = telemetry::dependency_span("Managed identity", "identity", "GetToken");
        match self.credential.get_token(&[SCOPE], None).await {
            Ok(token) => {
                telemetry::record_dependency_result(&span, None, true);
                Ok(token.token.secret().to_owned())
            }
            Err(error) => {
                telemetry::record_dependency_result(&span, None, false);
                // Without a token storage cannot be called: the dependency is unavailable.
                Err(StoreError::Unavailable(format!(
                    "managed identity token: {error}"
                )))
            }
        }
    }
}
