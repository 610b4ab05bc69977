//! The same document as OpenAPI 3.0.3, for API Management: its import of 3.1 is limited, and its
//! import rules (Learn, "API import restrictions and known issues") list shared `components`
//! responses, parameters and headers among what it does not take, so those are written inline.
//!
//! Written as a rendering of the 3.1 document rather than a second description, so the two
//! cannot disagree about anything but syntax.

use serde_json::{Map, Value, json};

/// `document` (OpenAPI 3.1, as served) rendered as OpenAPI 3.0.3.
pub fn render(document: &Value) -> Value {
    let mut out = document.clone();
    let shared = document
        .pointer("/components/responses")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(root) = out.as_object_mut() {
        root.insert("openapi".to_owned(), json!("3.0.3"));
        if let Some(license) = root
            .get_mut("info")
            .and_then(|info| info.get_mut("license"))
            .and_then(Value::as_object_mut)
        {
            // 3.1 only; the URL says the same.
            license.remove("identifier");
        }
        if let Some(components) = root.get_mut("components").and_then(Value::as_object_mut) {
            components.remove("responses");
        }
        if let Some(servers) = root.get_mut("servers").and_then(Value::as_array_mut) {
            // API Management takes the first HTTPS server as the backend when an import names
            // none: that must be the Function App, not the gateway itself. A plain-HTTP local
            // server has no place in a gateway's import.
            servers.retain(|server| {
                server["url"]
                    .as_str()
                    .is_some_and(|url| url.starts_with("https://"))
            });
            servers.sort_by_key(|server| server["url"] != super::FUNCTION_APP_URL);
        }
    }
    inline_responses(&mut out, &shared);
    downgrade_schemas(&mut out);
    out
}

/// Replaces every `{"$ref": "#/components/responses/X"}` by the response itself.
fn inline_responses(value: &mut Value, shared: &Value) {
    match value {
        Value::Object(map) => {
            let target = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/responses/"))
                .and_then(|name| shared.get(name))
                .cloned();
            match target {
                Some(response) => *value = response,
                None => map.values_mut().for_each(|v| inline_responses(v, shared)),
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| inline_responses(v, shared)),
        _ => {}
    }
}

/// JSON Schema 2020-12 constructs that 3.0's schema dialect spells differently, everywhere in
/// the document.
fn downgrade_schemas(value: &mut Value) {
    match value {
        Value::Object(map) => {
            downgrade_schema(map);
            map.values_mut().for_each(downgrade_schemas);
        }
        Value::Array(items) => items.iter_mut().for_each(downgrade_schemas),
        _ => {}
    }
}

fn downgrade_schema(schema: &mut Map<String, Value>) {
    // 3.0 ignores whatever stands beside a `$ref` (a description, say): keep it by wrapping the
    // reference in `allOf`.
    if schema.len() > 1
        && let Some(reference) = schema.remove("$ref")
    {
        schema.insert("allOf".to_owned(), json!([{ "$ref": reference }]));
    }
    // `"type": ["string", "null"]` → `"type": "string", "nullable": true`.
    if let Some(Value::Array(types)) = schema.get("type").cloned() {
        let nullable = types.iter().any(|t| t == "null");
        let rest: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
        if let [only] = rest.as_slice() {
            schema.insert("type".to_owned(), only.clone());
        } else {
            schema.remove("type");
        }
        if nullable {
            schema.insert("nullable".to_owned(), json!(true));
        }
    }
    // `oneOf: [X, {"type": "null"}]` → `allOf: [X], nullable: true`.
    for key in ["oneOf", "anyOf"] {
        let Some(Value::Array(alternatives)) = schema.get(key).cloned() else {
            continue;
        };
        let is_null = |v: &Value| v.get("type").is_some_and(|t| t == "null");
        if !alternatives.iter().any(is_null) {
            continue;
        }
        let rest: Vec<Value> = alternatives.into_iter().filter(|v| !is_null(v)).collect();
        schema.remove(key);
        if rest.len() == 1 {
            schema.insert("allOf".to_owned(), Value::Array(rest));
        } else {
            schema.insert(key.to_owned(), Value::Array(rest));
        }
        schema.insert("nullable".to_owned(), json!(true));
    }
    // Schema-level `examples` (an array in 2020-12) → one `example`. A media type's `examples`
    // is a map and stays.
    if let Some(Value::Array(examples)) = schema.get("examples").cloned() {
        schema.remove("examples");
        if let Some(first) = examples.into_iter().next() {
            schema.insert("example".to_owned(), first);
        }
    }
    if let Some(constant) = schema.remove("const") {
        schema.insert("enum".to_owned(), json!([constant]));
    }
    for (exclusive, inclusive) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(bound) = schema.get(exclusive).filter(|b| b.is_number()).cloned() {
            schema.insert(inclusive.to_owned(), bound);
            schema.insert(exclusive.to_owned(), json!(true));
        }
    }
    // No 3.0 equivalent; the constraint stays in the 3.1 document and in the service.
    for key in [
        "propertyNames",
        "contentMediaType",
        "contentEncoding",
        "$schema",
    ] {
        schema.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nulls_become_nullable_and_shared_responses_inline() {
        let document = json!({
            "openapi": "3.1.0",
            "info": {"license": {"name": "MIT", "identifier": "MIT", "url": "u"}},
            "paths": {"/a": {"get": {"responses": {
                "400": {"$ref": "#/components/responses/BadRequest"},
                "200": {"content": {"application/json": {"schema": {
                    "type": ["string", "null"], "examples": ["x"]
                }}}}
            }}}},
            "components": {
                "responses": {"BadRequest": {"description": "bad"}},
                "schemas": {"S": {"properties": {
                    "a": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/T"}]},
                    "m": {"type": "object", "propertyNames": {"type": "string"}}
                }}}
            }
        });
        let rendered = render(&document);
        assert_eq!(rendered["openapi"], "3.0.3");
        assert!(rendered["info"]["license"].get("identifier").is_none());
        assert!(rendered["components"].get("responses").is_none());
        let get = &rendered["paths"]["/a"]["get"]["responses"];
        assert_eq!(get["400"], json!({"description": "bad"}));
        assert_eq!(
            get["200"]["content"]["application/json"]["schema"],
            json!({"type": "string", "nullable": true, "example": "x"})
        );
        let properties = &rendered["components"]["schemas"]["S"]["properties"];
        assert_eq!(
            properties["a"],
            json!({"allOf": [{"$ref": "#/components/schemas/T"}], "nullable": true})
        );
        assert_eq!(properties["m"], json!({"type": "object"}));
    }
}
