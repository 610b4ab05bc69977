//! Where orders and export jobs live, behind two traits ([`OrderStore`], [`ExportStore`] with its
//! [`JobQueue`]) and two implementations of each that mirror each other: [`memory`] (the
//! development default, and the reference the other is tested against) and [`azure`] (Table,
//! Queue and Blob Storage). Nothing here knows about HTTP.

pub mod azure;
pub mod exports;
pub mod memory;
pub mod orders;

use std::sync::Arc;

use crate::config::StorageSettings;

pub use exports::{ExportStore, ExportStores, JobQueue};
pub use orders::{
    Claim, IDEMPOTENCY_CLAIM_TIMEOUT, IDEMPOTENCY_RETENTION, ListQuery, OrderStore, Page,
    StoredResponse,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The conditional write's ETag no longer matches (someone else wrote first).
    #[error("the stored order has changed")]
    EtagMismatch,
    #[error("the order does not exist")]
    NotFound,
    #[error("an order with this id already exists")]
    AlreadyExists,
    /// A continuation token that this store did not issue.
    #[error("the continuation token is not valid")]
    BadContinuation,
    /// The store could not be reached, or is refusing work for now.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something unusable.
    #[error("storage answered unexpectedly: {0}")]
    BadResponse(String),
    /// The store did not answer within the call's deadline.
    #[error("storage call timed out: {0}")]
    Timeout(String),
}

impl StoreError {
    /// A reason safe to show in the health report: no addresses, no account names.
    pub fn public_reason(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unreachable",
            Self::BadResponse(_) => "invalid response",
            Self::Timeout(_) => "timed out",
            _ => "failing",
        }
    }
}

/// The stores `settings` select: Azure Storage when an account is configured, else memory.
/// Creates clients only: tables, queues and containers are created on first use, so start-up
/// never waits for storage.
pub fn open(settings: &StorageSettings) -> Result<(Arc<dyn OrderStore>, ExportStores), String> {
    let Some(account) = &settings.account else {
        return Ok((
            Arc::new(memory::MemoryOrderStore::with_key_limit(
                settings.idempotency_keys_per_owner,
            )),
            ExportStores::in_memory(),
        ));
    };
    let timing = azure::Timing {
        deadline: settings.call_timeout,
        ..azure::Timing::default()
    };
    let client = azure::connect(account.clone(), timing)?;
    Ok(azure::open(
        client,
        &azure::Names::default(),
        settings.idempotency_keys_per_owner,
    ))
}
