//! The OpenAPI documents: served, checked in (3.1 as served, and its 3.0.3 rendering for API
//! Management), and complete about errors and the headers the service sends.

use orders_api::routes::openapi::{SpecVersion, render};
use serde_json::Value;

fn checked_in(file: &str) -> String {
    std::fs::read_to_string(format!("{}/openapi/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test]
async fn served_document_matches_the_checked_in_copy() {
    let app = crate::helpers::spawn().await;
    let response = app
        .anonymous("GET", "/api/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let served = response.text().await.unwrap();
    assert!(
        served == checked_in("openapi.json"),
        "openapi/openapi.json is stale: run `cargo run -- openapi --output openapi/openapi.json`"
    );
}

#[test]
fn the_3_0_rendering_matches_its_checked_in_copy() {
    let rendered = render(&orders_api::routes::document(), SpecVersion::V3_0).unwrap();
    assert!(
        rendered == checked_in("openapi-3.0.json"),
        "openapi/openapi-3.0.json is stale: run `cargo run -- openapi --spec-version 3.0 --output openapi/openapi-3.0.json`"
    );
    let document: Value = serde_json::from_str(&rendered).unwrap();
    assert_eq!(document["openapi"], "3.0.3");
    let text = rendered.as_str();
    for construct in ["\"null\"", "propertyNames", "#/components/responses/"] {
        assert!(!text.contains(construct), "3.0 has no {construct}");
    }
    assert!(
        document["servers"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with(".azurewebsites.net"),
        "API Management takes the first server as the backend"
    );
}

/// The response an operation gives for `status`, with shared responses resolved.
fn response<'a>(document: &'a Value, operation: &'a Value, status: &str) -> &'a Value {
    let response = &operation["responses"][status];
    match response["$ref"].as_str() {
        Some(reference) => {
            let name = reference.trim_start_matches("#/components/responses/");
            &document["components"]["responses"][name]
        }
        None => response,
    }
}

#[test]
fn every_error_is_documented_with_both_bodies_and_its_headers() {
    let document: Value = serde_json::to_value(orders_api::routes::document()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/orders") && paths.contains_key("/api/orders/{id}"));
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["operationId"].is_string(),
                "{method} {path} has an operationId"
            );
            let statuses = operation["responses"].as_object().unwrap();
            assert!(
                statuses.contains_key("500"),
                "{method} {path} documents 500"
            );
            for status in statuses.keys() {
                let answer = response(&document, operation, status);
                let headers = answer["headers"].as_object().unwrap();
                assert!(
                    headers.contains_key("x-request-id"),
                    "{method} {path} {status} declares x-request-id"
                );
                let error = status.starts_with('4') || status.starts_with('5');
                if error && !(path == "/api/health" && status == "503") {
                    let content = &answer["content"];
                    assert_eq!(
                        content["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                    assert_eq!(
                        content["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/ProblemDetails",
                        "{method} {path} {status}"
                    );
                }
                if path.starts_with("/api/") && path != "/api/health" {
                    assert!(
                        headers.contains_key("RateLimit-Remaining"),
                        "{method} {path} {status} declares the rate limit"
                    );
                }
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                assert_ne!(
                    parameter["schema"]["type"],
                    serde_json::json!(["string", "null"]),
                    "{method} {path}: a header is never null"
                );
            }
        }
    }
    for (status, header) in [
        ("401", "WWW-Authenticate"),
        ("403", "WWW-Authenticate"),
        ("429", "Retry-After"),
        ("503", "Retry-After"),
    ] {
        let get_order = &document["paths"]["/api/orders"]["get"];
        let answer = response(&document, get_order, status);
        assert!(
            answer["headers"].get(header).is_some(),
            "{status} declares {header}"
        );
    }
    let list = &document["paths"]["/api/orders"]["get"];
    assert_eq!(list["x-ms-pageable"]["nextLinkName"], "nextLink");
}
