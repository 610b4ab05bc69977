//! The custom-handler invocation payload, for functions the host does not forward as plain
//! HTTP (here: the `export-worker` queue trigger). The host sends `POST /<function name>` with
//! `{"Data": {<binding>: value}, "Metadata": {...}}` and reads back
//! `{"Outputs": {...}, "Logs": [...], "ReturnValue": ...}`; any non-2xx fails the invocation.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvocationRequest {
    #[serde(default)]
    pub data: Map<String, Value>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl InvocationRequest {
    /// The trigger's value: the binding called `name`, else the only binding there is.
    pub fn trigger(&self, name: &str) -> Option<&Value> {
        self.data.get(name).or_else(|| {
            let mut values = self.data.values();
            match (values.next(), values.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        })
    }

    /// A numeric metadata value such as `DequeueCount`: a number, or a string holding one
    /// (possibly JSON-encoded once more).
    pub fn metadata_number(&self, name: &str) -> Option<u64> {
        fn number(value: &Value) -> Option<u64> {
            match value {
                Value::Number(n) => n.as_u64(),
                Value::String(text) => text.trim().parse().ok().or_else(|| {
                    serde_json::from_str::<Value>(text)
                        .ok()
                        .as_ref()
                        .and_then(number)
                }),
                _ => None,
            }
        }
        self.metadata.get(name).and_then(number)
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvocationResponse {
    pub outputs: Map<String, Value>,
    /// Reach Application Insights through the host, tied to the invocation.
    pub logs: Vec<String>,
    pub return_value: Value,
}

impl InvocationResponse {
    pub fn log(mut self, line: impl Into<String>) -> Self {
        self.logs.push(line.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hosts_payload() {
        let payload: InvocationRequest = serde_json::from_value(serde_json::json!({
            "Data": {"job": "\"{\\\"a\\\":1}\""},
            "Metadata": {"DequeueCount": 2, "Id": "\"abc\"", "sys": {"MethodName": "export-worker"}}
        }))
        .unwrap();
        assert!(payload.trigger("job").is_some());
        assert!(payload.trigger("other").is_some(), "the only binding");
        assert_eq!(payload.metadata_number("DequeueCount"), Some(2));
        let quoted: InvocationRequest = serde_json::from_value(serde_json::json!({
            "Data": {}, "Metadata": {"DequeueCount": "\"3\""}
        }))
        .unwrap();
        assert_eq!(quoted.metadata_number("DequeueCount"), Some(3));
        let reply = serde_json::to_value(InvocationResponse::default().log("x")).unwrap();
        assert_eq!(
            reply,
            serde_json::json!({"Outputs": {}, "Logs": ["x"], "ReturnValue": null})
        );
    }
}
