//! The OpenAPI document: served, checked in, and complete about errors.

use serde_json::Value;

#[tokio::test]
async fn served_document_matches_the_checked_in_copy() {
    let app = crate::helpers::spawn().await;
    let response = app
        .anonymous("GET", "/api/openapi.json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let served: Value = response.json().await.unwrap();
    let checked_in: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        served == checked_in,
        "openapi/openapi.json is stale: run `cargo run -- openapi --output openapi/openapi.json`"
    );
    assert_eq!(
        orders_api::routes::openapi::to_json(&orders_api::routes::document()).unwrap(),
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap()
    );
}

#[test]
fn every_operation_documents_its_errors_with_the_error_schema() {
    let document: Value = serde_json::to_value(orders_api::routes::document()).unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/orders") && paths.contains_key("/api/orders/{id}"));
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["operationId"].is_string(),
                "{method} {path} has an operationId"
            );
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.contains_key("500"),
                "{method} {path} documents 500"
            );
            for (status, response) in responses {
                if status.starts_with('4') || (status.starts_with('5') && path != "/api/health") {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
}
