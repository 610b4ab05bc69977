//! Log lines under attack, from the real binary's stderr: a client's `%0d%0a` cannot forge a
//! text line, and JSON logs stay one object per line with unique keys, panics included.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::helpers::{Handler, eventually};

const FORGED: &str = "INFO orders_api: forged line";

/// Requests whose paths carry a CR LF, an ANSI escape and a line separator (percent-encoded,
/// as a client sends them; the order id arrives decoded in the 404's message).
async fn attack(handler: &Handler, token: &str) {
    let client = reqwest::Client::new();
    for path in [
        "/api/orders/x%0d%0aINFO%20orders_api:%20forged%20line",
        "/api/orders/x%1b[2J%e2%80%a8INFO%20orders_api:%20forged%20line",
        "/api/nowhere%0d%0aINFO%20orders_api:%20forged%20line",
    ] {
        let response = client
            .get(format!("{}{path}", handler.base()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}

fn dev_token() -> String {
    let request = orders_api::auth::dev::TokenRequest::new("alice", &["Orders.Read"]);
    orders_api::auth::dev::issue_token(&orders_api::config::Config::defaults().auth, &request)
        .unwrap()
}

/// Waits until `count` "request rejected" lines have arrived through the pipe.
async fn rejections(handler: &Handler, count: usize) -> String {
    eventually("the rejections' log lines", || async {
        let stderr = handler.stderr();
        if stderr.matches("request rejected").count() >= count {
            Ok(stderr)
        } else {
            Err(stderr)
        }
    })
    .await
}

#[tokio::test]
async fn a_path_cannot_forge_a_text_log_line() {
    let handler = Handler::start(&[("RUST_LOG", "debug"), ("ORDERS_LOG_FORMAT", "text")]);
    attack(&handler, &dev_token()).await;
    let stderr = rejections(&handler, 3).await;
    for line in stderr.lines() {
        assert!(!line.starts_with(FORGED), "forged: {line:?}");
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{2028}'),
            "raw control character in {line:?}"
        );
    }
    // Still readable: the escapes say what was sent.
    assert!(
        stderr.contains("reason=\"Order 'x\\r\\nINFO orders_api: forged line' was not found.\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_unique_keys_panics_included() {
    let handler = Handler::start(&[
        ("RUST_LOG", "debug"),
        ("ORDERS_LOG_FORMAT", "json"),
        ("ORDERS_FAULT_INJECTION", "true"),
        ("RUST_BACKTRACE", "1"),
    ]);
    let token = dev_token();
    attack(&handler, &token).await;
    let panic = reqwest::Client::new()
        .get(format!("{}/api/faults/panic", handler.base()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(panic.status(), 500);
    rejections(&handler, 3).await;
    let stderr = eventually("the panic's log line", || async {
        let stderr = handler.stderr();
        if stderr.contains("\"message\":\"request failed\"") {
            Ok(stderr)
        } else {
            Err(stderr)
        }
    })
    .await;

    let mut messages = Vec::new();
    for line in stderr.lines() {
        let object = serde_json::from_str::<UniqueKeys>(line)
            .unwrap_or_else(|e| panic!("not one JSON object with unique keys ({e}): {line}"));
        assert!(object.0, "not an object: {line}");
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        messages.push(value["message"].as_str().unwrap_or_default().to_owned());
        if value["message"] == "request rejected" {
            assert!(value["reason"].is_string(), "{line}");
        }
        if value["message"] == "panic" {
            assert!(
                value["payload"]
                    .as_str()
                    .unwrap()
                    .contains("deliberate panic")
            );
            assert!(value["location"].as_str().unwrap().contains("faults.rs"));
        }
    }
    assert!(messages.iter().any(|m| m == "panic"), "{stderr}");
    assert!(
        !stderr.contains("panicked at"),
        "the default hook's text: {stderr}"
    );
}

/// A JSON value read while checking that no object repeats a key; holds whether the top level
/// was an object.
struct UniqueKeys(bool);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Checker)
    }
}

struct Checker;

impl<'de> Visitor<'de> for Checker {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys(true))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys(false))
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(false))
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(false))
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(false))
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(false))
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(false))
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys(false))
    }
}
