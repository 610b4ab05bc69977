//! Where orders and exports live: `AzureWebJobsStorage` (a connection string) or an
//! identity-based connection (`AzureWebJobsStorage__accountName`, `__tableServiceUri`,
//! `__queueServiceUri`, `__blobServiceUri`, `__clientId`), and `ORDERS_STORAGE_TIMEOUT_MS`, each
//! storage call's deadline, retries included.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Url;

use super::{ConfigError, parse_number};

pub const CONNECTION: &str = "AzureWebJobsStorage";

/// `ORDERS_IDEMPOTENCY_KEYS_PER_CALLER` when unset: a day of keyed creates at one every ten
/// seconds, with room to spare, in a few megabytes per caller.
pub const DEFAULT_IDEMPOTENCY_KEYS_PER_OWNER: usize = 10_000;

#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// `None`: orders and exports live in memory.
    pub account: Option<StorageAccount>,
    pub call_timeout: Duration,
    /// Idempotency keys one owner may hold at a time (`ORDERS_IDEMPOTENCY_KEYS_PER_CALLER`).
    pub idempotency_keys_per_owner: usize,
}

impl StorageSettings {
    pub(super) fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
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
        let call_timeout =
            Duration::from_millis(parse_number(get, "ORDERS_STORAGE_TIMEOUT_MS", 10_000, 1)?);
        let keys = parse_number(
            get,
            "ORDERS_IDEMPOTENCY_KEYS_PER_CALLER",
            DEFAULT_IDEMPOTENCY_KEYS_PER_OWNER as u64,
            1,
        )?;
        Ok(Self {
            account,
            call_timeout,
            idempotency_keys_per_owner: usize::try_from(keys).unwrap_or(usize::MAX),
        })
    }
}

/// Azurite's development account: public, from Microsoft's documentation.
pub const DEVELOPMENT_ACCOUNT: &str = "devstoreaccount1";
pub const DEVELOPMENT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The three services' base URLs. Path-style endpoints (Azurite: `http://host:port/account`)
/// keep the account in the path; every request path is appended to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub table: Url,
    pub queue: Url,
    pub blob: Url,
}

/// How requests are authorised. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The account key (SharedKey signing; read-only SAS URLs for downloads).
    SharedKey(Vec<u8>),
    /// A Microsoft Entra token for `https://storage.azure.com/` from a managed identity.
    ManagedIdentity {
        /// A user-assigned identity's client id; `None` = the system-assigned identity.
        client_id: Option<String>,
    },
}

/// A storage account, parsed and validated. `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct StorageAccount {
    pub name: String,
    pub endpoints: Endpoints,
    pub credential: Credential,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SharedKey(_) => f.write_str("SharedKey(<redacted>)"),
            Self::ManagedIdentity { client_id } => f
                .debug_struct("ManagedIdentity")
                .field("client_id", client_id)
                .finish(),
        }
    }
}

impl fmt::Debug for StorageAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credential = &self.credential;
        f.debug_struct("StorageAccount")
            .field("name", &self.name)
            .field("table", &self.endpoints.table.as_str())
            .field("queue", &self.endpoints.queue.as_str())
            .field("blob", &self.endpoints.blob.as_str())
            .field("credential", &credential)
            .finish()
    }
}

impl StorageAccount {
    /// Parses a connection string: `UseDevelopmentStorage=true`, or
    /// `DefaultEndpointsProtocol=..;AccountName=..;AccountKey=..;EndpointSuffix=..` with optional
    /// explicit `TableEndpoint` / `QueueEndpoint` / `BlobEndpoint`. The error never quotes the key.
    pub fn from_connection_string(text: &str) -> Result<Self, String> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, value)) = part.split_once('=') else {
                // The part may be a secret pasted on its own: never quote it.
                return Err("a part is not a Name=value pair".to_owned());
            };
            pairs.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };

        if get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Self::development("127.0.0.1", [10000, 10001, 10002]);
        }
        if get("sharedaccesssignature").is_some() {
            return Err(
                "SharedAccessSignature connection strings are not supported: use an account key or an identity-based connection".to_owned(),
            );
        }
        let name = get("accountname").ok_or("AccountName is missing")?;
        validate_account_name(name)?;
        let key = get("accountkey").ok_or("AccountKey is missing")?;
        let key = STANDARD
            .decode(key)
            .map_err(|_| "AccountKey is not valid Base64".to_owned())?;
        let protocol = get("defaultendpointsprotocol").unwrap_or("https");
        if protocol != "https" && protocol != "http" {
            return Err(format!(
                "DefaultEndpointsProtocol '{protocol}' is not http or https"
            ));
        }
        let suffix = get("endpointsuffix").unwrap_or("core.windows.net");
        let endpoint = |setting: &str, service: &str| -> Result<Url, String> {
            match get(setting) {
                Some(explicit) => parse_endpoint(explicit),
                None => parse_endpoint(&format!("{protocol}://{name}.{service}.{suffix}")),
            }
        };
        Ok(Self {
            name: name.to_owned(),
            endpoints: Endpoints {
                table: endpoint("tableendpoint", "table")?,
                queue: endpoint("queueendpoint", "queue")?,
                blob: endpoint("blobendpoint", "blob")?,
            },
            credential: Credential::SharedKey(key),
        })
    }

    /// An identity-based connection: `<prefix>__accountName`, or explicit
    /// `<prefix>__tableServiceUri` / `__queueServiceUri` / `__blobServiceUri`, plus an optional
    /// `<prefix>__clientId` for a user-assigned identity.
    pub fn from_identity_settings(
        account_name: Option<&str>,
        table_uri: Option<&str>,
        queue_uri: Option<&str>,
        blob_uri: Option<&str>,
        client_id: Option<&str>,
    ) -> Result<Self, String> {
        let name = match account_name {
            Some(name) => name.to_owned(),
            // Service URIs name the account in their host: https://<account>.blob.core.windows.net
            None => [blob_uri, queue_uri, table_uri]
                .into_iter()
                .flatten()
                .find_map(|uri| {
                    Url::parse(uri)
                        .ok()
                        .and_then(|u| u.host_str().and_then(|h| h.split('.').next().map(str::to_owned)))
                })
                .ok_or("accountName is missing (or give tableServiceUri, queueServiceUri and blobServiceUri)")?,
        };
        validate_account_name(&name)?;
        let endpoint = |explicit: Option<&str>, service: &str| -> Result<Url, String> {
            match explicit {
                Some(uri) => parse_endpoint(uri),
                None => parse_endpoint(&format!("https://{name}.{service}.core.windows.net")),
            }
        };
        Ok(Self {
            endpoints: Endpoints {
                table: endpoint(table_uri, "table")?,
                queue: endpoint(queue_uri, "queue")?,
                blob: endpoint(blob_uri, "blob")?,
            },
            credential: Credential::ManagedIdentity {
                client_id: client_id.map(str::to_owned),
            },
            name,
        })
    }

    /// The development account on `host` with blob, queue and table ports.
    pub fn development(host: &str, ports: [u16; 3]) -> Result<Self, String> {
        let [blob, queue, table] = ports;
        let url =
            |port: u16| parse_endpoint(&format!("http://{host}:{port}/{DEVELOPMENT_ACCOUNT}"));
        Ok(Self {
            name: DEVELOPMENT_ACCOUNT.to_owned(),
            endpoints: Endpoints {
                table: url(table)?,
                queue: url(queue)?,
                blob: url(blob)?,
            },
            credential: Credential::SharedKey(
                STANDARD
                    .decode(DEVELOPMENT_KEY)
                    .map_err(|_| "the development key is not Base64".to_owned())?,
            ),
        })
    }
}

fn validate_account_name(name: &str) -> Result<(), String> {
    if (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        Ok(())
    } else {
        Err(format!(
            "account name '{name}' is not 3 to 24 lower-case letters and digits"
        ))
    }
}

fn parse_endpoint(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("endpoint '{text}' is not a URL: {e}"))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!("endpoint '{text}' is not http or https"));
    }
    if url.host_str().is_none() || url.query().is_some() {
        return Err(format!("endpoint '{text}' needs a host and no query"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_storage() {
        let account = StorageAccount::from_connection_string("UseDevelopmentStorage=true").unwrap();
        assert_eq!(account.name, DEVELOPMENT_ACCOUNT);
        assert_eq!(
            account.endpoints.blob.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(
            account.endpoints.queue.as_str(),
            "http://127.0.0.1:10001/devstoreaccount1"
        );
        assert_eq!(
            account.endpoints.table.as_str(),
            "http://127.0.0.1:10002/devstoreaccount1"
        );
        assert!(matches!(account.credential, Credential::SharedKey(ref k) if k.len() == 64));
    }

    #[test]
    fn account_key_with_suffix() {
        let account = StorageAccount::from_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=ordersprod;AccountKey=a2V5;EndpointSuffix=core.chinacloudapi.cn",
        )
        .unwrap();
        assert_eq!(
            account.endpoints.table.as_str(),
            "https://ordersprod.table.core.chinacloudapi.cn/"
        );
        assert_eq!(account.credential, Credential::SharedKey(b"key".to_vec()));
        let default_suffix =
            StorageAccount::from_connection_string("AccountName=ordersprod;AccountKey=a2V5")
                .unwrap();
        assert_eq!(
            default_suffix.endpoints.blob.as_str(),
            "https://ordersprod.blob.core.windows.net/"
        );
    }

    #[test]
    fn explicit_endpoints_win() {
        let account = StorageAccount::from_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;TableEndpoint=http://127.0.0.1:5/devstoreaccount1;",
        )
        .unwrap();
        assert_eq!(
            account.endpoints.table.as_str(),
            "http://127.0.0.1:5/devstoreaccount1"
        );
        assert_eq!(
            account.endpoints.queue.as_str(),
            "http://devstoreaccount1.queue.core.windows.net/"
        );
    }

    #[test]
    fn errors_never_quote_the_key() {
        for bad in [
            "AccountName=ordersprod",
            "AccountName=Orders_Prod;AccountKey=a2V5",
            "AccountName=ordersprod;AccountKey=not base64!",
            "AccountName=ordersprod;AccountKey=a2V5;DefaultEndpointsProtocol=ftp",
            "AccountName=ordersprod;AccountKey=a2V5;TableEndpoint=nonsense",
            "secretvalue",
        ] {
            let error = StorageAccount::from_connection_string(bad).unwrap_err();
            assert!(
                !error.contains("a2V5") && !error.contains("secretvalue"),
                "{error}"
            );
        }
        let account =
            StorageAccount::from_connection_string("AccountName=ordersprod;AccountKey=a2V5")
                .unwrap();
        assert!(!format!("{account:?}").contains("key\""));
        assert!(format!("{account:?}").contains("redacted"));
    }

    #[test]
    fn identity_connections() {
        let account =
            StorageAccount::from_identity_settings(Some("ordersprod"), None, None, None, None)
                .unwrap();
        assert_eq!(
            account.endpoints.queue.as_str(),
            "https://ordersprod.queue.core.windows.net/"
        );
        assert_eq!(
            account.credential,
            Credential::ManagedIdentity { client_id: None }
        );
        let by_uri = StorageAccount::from_identity_settings(
            None,
            Some("https://acct1.table.core.windows.net"),
            Some("https://acct1.queue.core.windows.net"),
            Some("https://acct1.blob.core.windows.net"),
            Some("1234"),
        )
        .unwrap();
        assert_eq!(by_uri.name, "acct1");
        assert_eq!(
            by_uri.credential,
            Credential::ManagedIdentity {
                client_id: Some("1234".to_owned())
            }
        );
        assert!(StorageAccount::from_identity_settings(None, None, None, None, None).is_err());
    }

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
    }

    #[test]
    fn connection_string_and_identity() {
        let s = settings(&[("AzureWebJobsStorage", "UseDevelopmentStorage=true")]).unwrap();
        assert_eq!(s.account.unwrap().name, "devstoreaccount1");
        let s = settings(&[
            ("AzureWebJobsStorage__accountName", "ordersprod"),
            ("AzureWebJobsStorage__clientId", "abc"),
        ])
        .unwrap();
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
