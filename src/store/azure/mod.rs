//! Azure Storage through its REST API: a small client for Table, Queue and Blob with SharedKey
//! signing or managed identity tokens, retries and a deadline per call. The official Rust crates
//! cannot use account keys, Azurite or Tables, which this service needs.

pub mod blob;
pub mod client;
pub mod exports;
pub mod identity;
pub mod key_ledger;
pub mod orders;
pub mod queue;
pub mod signing;
pub mod table;
mod xml;

use std::sync::Arc;

use crate::config::storage::{Credential, StorageAccount};
use crate::store::{ExportStores, OrderStore};

pub use client::{StorageClient, Timing};
pub use exports::{StorageJobQueue, TableExportStore};
pub use orders::TableOrderStore;

/// Names of the tables, queue and container this service uses in the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub orders_table: String,
    pub exports_table: String,
    /// Must match `export-worker/function.json`'s `queueName`.
    pub export_queue: String,
    pub exports_container: String,
}

impl Default for Names {
    fn default() -> Self {
        Self {
            orders_table: "orders".to_owned(),
            exports_table: "exports".to_owned(),
            export_queue: "export-jobs".to_owned(),
            exports_container: "exports".to_owned(),
        }
    }
}

impl Names {
    /// Names with a suffix (letters and digits), so that several users of one account (tests)
    /// never see each other's data.
    pub fn suffixed(suffix: &str) -> Self {
        Self {
            orders_table: format!("orders{suffix}"),
            exports_table: format!("exports{suffix}"),
            export_queue: format!("export-jobs-{suffix}"),
            exports_container: format!("exports-{suffix}"),
        }
    }
}

/// A client for `account`, with a managed identity token source when the account needs one.
pub fn connect(account: StorageAccount, timing: Timing) -> Result<Arc<StorageClient>, String> {
    let tokens: Option<Arc<dyn identity::TokenSource>> = match &account.credential {
        Credential::SharedKey(_) => None,
        Credential::ManagedIdentity { client_id } => {
            Some(Arc::new(identity::ManagedIdentity::new(client_id.clone())?))
        }
    };
    StorageClient::new(account, tokens, timing).map(Arc::new)
}

/// The stores on the account behind `client`, under `names`; each owner holds at most
/// `key_limit` idempotency keys at a time.
pub fn open(
    client: Arc<StorageClient>,
    names: &Names,
    key_limit: usize,
) -> (Arc<dyn OrderStore>, ExportStores) {
    let orders = Arc::new(
        TableOrderStore::new(client.clone(), &names.orders_table).with_key_limit(key_limit),
    );
    let exports = ExportStores {
        jobs: Arc::new(TableExportStore::new(
            client.clone(),
            &names.exports_table,
            &names.exports_container,
        )),
        queue: Arc::new(StorageJobQueue::new(client, &names.export_queue)),
    };
    (orders, exports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_connections_start_without_a_network_call() {
        let account =
            StorageAccount::from_identity_settings(Some("ordersprod"), None, None, None, None)
                .unwrap();
        let client = connect(account, Timing::default()).unwrap();
        assert!(client.account_key().is_none());
    }
}
