//! Input that serde would take but the API does not mean: arrays spelling an object's fields in
//! order, and quantities with a fractional part too small for a float to keep.

use serde_json::{Value, json};

use crate::helpers::{assert_error, sample_order, spawn};

async fn post_raw(app: &crate::helpers::TestApp, body: &str) -> reqwest::Response {
    app.post("/api/orders")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn only_objects_are_orders() {
    let app = spawn().await;
    for body in [
        // The whole order as an array of its fields, and each item as one.
        r#"[[["A-1",2,"9.99"]],"EUR"]"#,
        r#"{"items":[["A-1",2,"9.99"]],"currency":"EUR"}"#,
        r#"[[{"sku":"A-1","quantity":2,"unitPrice":"9.99"}],"EUR"]"#,
    ] {
        let error = assert_error(post_raw(&app, body).await, 400, "BadRequest").await;
        let detail = &error["details"][0];
        assert_eq!(
            detail["message"], "invalid type: sequence, expected a JSON object",
            "{body} → {error}"
        );
    }
    let (id, _, _) = app.create_order(&sample_order()).await;
    // A merge patch with items spelled as arrays is refused too.
    let response = app
        .patch(&format!("/api/orders/{id}"))
        .json(&json!({"items": [["A-1", 3, "1.00"]]}))
        .send()
        .await
        .unwrap();
    let error = assert_error(response, 400, "BadRequest").await;
    assert_eq!(error["details"][0]["field"], "items[0]");
    assert_eq!(app.store.len(), 1, "nothing but the valid order was stored");
}

#[tokio::test]
async fn a_fraction_however_small_is_not_a_quantity() {
    let app = spawn().await;
    for quantity in [
        "1.0000000000000000001",
        "1.5",
        "2.00000000000000000000000001",
        "1e-30",
    ] {
        let body = format!(
            r#"{{"items":[{{"sku":"A-1","quantity":{quantity},"unitPrice":"9.99"}}],"currency":"EUR"}}"#
        );
        let error = assert_error(post_raw(&app, &body).await, 400, "BadRequest").await;
        assert_eq!(
            error["details"][0]["field"], "items[0].quantity",
            "{quantity}"
        );
        assert_eq!(
            error["details"][0]["message"],
            format!("invalid value: {quantity}, expected a whole number")
        );
    }
    assert_eq!(app.store.len(), 0);

    // In a merge patch as well.
    let (id, etag, _) = app.create_order(&sample_order()).await;
    let response = app
        .patch(&format!("/api/orders/{id}"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"items":[{"sku":"A-1","quantity":1.0000000000000000001,"unitPrice":"1"}]}"#)
        .send()
        .await
        .unwrap();
    let error = assert_error(response, 400, "BadRequest").await;
    assert_eq!(error["details"][0]["field"], "items[0].quantity");
    let unchanged = app.get(&format!("/api/orders/{id}")).send().await.unwrap();
    assert_eq!(crate::helpers::header(&unchanged, "etag"), etag);
}

#[tokio::test]
async fn whole_numbers_written_with_a_point_or_exponent_are_quantities() {
    // JSON Schema's `integer` is any number without a fractional part: the conformance fuzzing
    // sends `2.0`, and so may any client whose JSON library writes floats.
    let app = spawn().await;
    for (quantity, expected) in [
        ("2.0", 2),
        ("2.000", 2),
        ("2e0", 2),
        ("20E-1", 2),
        ("1E3", 1000),
    ] {
        let body = format!(
            r#"{{"items":[{{"sku":"A-1","quantity":{quantity},"unitPrice":"9.99"}}],"currency":"EUR"}}"#
        );
        let response = post_raw(&app, &body).await;
        assert_eq!(response.status(), 201, "{quantity}");
        let order: Value = response.json().await.unwrap();
        assert_eq!(order["items"][0]["quantity"], expected, "{quantity}");
    }
}
