//! Storage settings: `AzureWebJobsStorage` (a connection string) or an identity-based connection
//! (`AzureWebJobsStorage__accountName`, `__tableServiceUri`, `__queueServiceUri`,
//! `__blobServiceUri`, `__clientId`), and `ORDERS_STORAGE_TIMEOUT_MS`, each storage call's
//! deadline, retries included.

use std::sync::Arc;
use std::time::Duration;

use super::OrderStore;
use super::azure::{
    self, Names, StorageAccount, StorageJobQueue, TableExportStore, TableOrderStore,
};
use super::memory::MemoryStore;
use crate::config::ConfigError;
use crate::exports::Exports;

pub const CONNECTION: &str = "AzureWebJobsStorage";

#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// `None`: orders and exports live in memory.
    pub account: Option<StorageAccount>,
    pub call_timeout: Duration,
    /// The Functions host runs this process (`FUNCTIONS_CUSTOMHANDLER_PORT` set): the host's
    /// queue trigger processes export jobs, so no poller runs.
    pub under_functions_host: bool,
}

impl StorageSettings {
    pub fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let identity = |suffix: &str| get(&format!("{CONNECTION}__{suffix}"));
        let account = match get(CONNECTION) {
            Some(text) => Some(
                StorageAccount::from_connection_string(&text)
                    .map_err(|problem| ConfigError::new(CONNECTION, problem))?,
            ),
            None => {
                let (name, table, queue, blob) = (
                    identity("accountName"),
                    identity("tableServiceUri"),
                    identity("queueServiceUri"),
                    identity("blobServiceUri"),
                );
                if name.is_some() || table.is_some() || queue.is_some() || blob.is_some() {
                    Some(
                        StorageAccount::from_identity_settings(
                            name.as_deref(),
                            table.as_deref(),
                            queue.as_deref(),
                            blob.as_deref(),
                            identity("clientId").as_deref(),
                        )
                        .map_err(|problem| {
                            ConfigError::new("AzureWebJobsStorage__accountName", problem)
                        })?,
                    )
                } else {
                    None
                }
            }
        };
        let call_timeout = match get("ORDERS_STORAGE_TIMEOUT_MS") {
            None => Duration::from_secs(10),
            Some(text) => match text.trim().parse::<u64>() {
                Ok(ms) if ms >= 1 => Duration::from_millis(ms),
                _ => {
                    return Err(ConfigError::new(
                        "ORDERS_STORAGE_TIMEOUT_MS",
                        format!("'{text}' is not a whole number of at least 1"),
                    ));
                }
            },
        };
        Ok(Self {
            account,
            call_timeout,
            under_functions_host: get("FUNCTIONS_CUSTOMHANDLER_PORT").is_some(),
        })
    }
}

/// The stores `settings` select. Creates clients only: tables, queues and containers are
/// created on first use, so start-up never waits for storage.
pub fn open(settings: &StorageSettings) -> Result<(Arc<dyn OrderStore>, Exports), String> {
    let Some(account) = &settings.account else {
        return Ok((Arc::new(MemoryStore::new()), Exports::in_memory()));
    };
    let timing = azure::Timing {
        deadline: settings.call_timeout,
        ..azure::Timing::default()
    };
    let client = azure::connect(account.clone(), timing)?;
    Ok(open_azure(client, &Names::default()))
}

/// Stores on the account behind `client`, under `names`.
pub fn open_azure(
    client: Arc<azure::StorageClient>,
    names: &Names,
) -> (Arc<dyn OrderStore>, Exports) {
    let orders = Arc::new(TableOrderStore::new(client.clone(), &names.orders_table));
    let exports = Exports {
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
    use crate::store::azure::Credential;

    fn settings(pairs: &[(&str, &str)]) -> Result<StorageSettings, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        StorageSettings::from_lookup(&|name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn unset_means_memory() {
        let s = settings(&[]).unwrap();
        assert!(s.account.is_none());
        assert_eq!(s.call_timeout, Duration::from_secs(10));
        assert!(!s.under_functions_host);
    }

    #[test]
    fn connection_string_and_identity() {
        let s = settings(&[("AzureWebJobsStorage", "UseDevelopmentStorage=true")]).unwrap();
        assert_eq!(s.account.unwrap().name, "devstoreaccount1");
        let s = settings(&[
            ("AzureWebJobsStorage__accountName", "ordersprod"),
            ("AzureWebJobsStorage__clientId", "abc"),
            ("FUNCTIONS_CUSTOMHANDLER_PORT", "1234"),
        ])
        .unwrap();
        assert!(s.under_functions_host);
        assert_eq!(
            s.account.unwrap().credential,
            Credential::ManagedIdentity {
                client_id: Some("abc".into())
            }
        );
    }

    #[test]
    fn bad_values_name_the_setting() {
        let error = settings(&[("AzureWebJobsStorage", "AccountName=x")]).unwrap_err();
        assert_eq!(error.setting, "AzureWebJobsStorage");
        let error = settings(&[("ORDERS_STORAGE_TIMEOUT_MS", "soon")]).unwrap_err();
        assert_eq!(error.setting, "ORDERS_STORAGE_TIMEOUT_MS");
    }
}
