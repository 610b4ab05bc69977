//! The orders resource over a real socket: every row of its HTTP semantics, concurrency, and
//! proof that rejected requests change nothing.

use crate::helpers::{TestApp, assert_error, header, sample_order, spawn, spawn_with, test_config};
use serde_json::{Value, json};

/// Everything the store holds for alice, read back through the API.
async fn snapshot(app: &TestApp) -> Vec<Value> {
    let response = app.get("/api/orders?top=100").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["value"].as_array().unwrap().clone()
}

#[tokio::test]
async fn create_returns_201_with_location_etag_and_the_order() {
    let app = spawn().await;
    let response = app
        .post("/api/orders")
        .json(&json!({"items": [{"sku": "A-1", "quantity": 2, "unitPrice": "9.99"}, {"sku": "B_2", "quantity": 3, "unitPrice": "0.1"}], "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = header(&response, "location");
    let etag = header(&response, "etag");
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "strong ETag: {etag}"
    );
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/orders/{id}"));
    assert_eq!(body["status"], "pending");
    assert_eq!(body["currency"], "EUR");
    assert_eq!(body["total"], "20.28", "exact money: 2 × 9.99 + 3 × 0.1");
    assert_eq!(
        body["items"][1],
        json!({"sku": "B_2", "quantity": 3, "unitPrice": "0.1"})
    );
    assert_eq!(app.store.len(), 1);
}

#[tokio::test]
async fn invalid_orders_list_every_problem() {
    let app = spawn().await;
    let response = app
        .post("/api/orders")
        .json(&json!({"items": [{"sku": "no spaces", "quantity": 0, "unitPrice": "-1"}, {"sku": "A", "quantity": 10001, "unitPrice": "1.23456"}], "currency": "eur"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(response, 400, "BadRequest").await;
    let fields: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "items[0].sku",
            "items[0].quantity",
            "items[0].unitPrice",
            "items[1].quantity",
            "items[1].unitPrice",
            "currency"
        ]
    );
    let too_many: Vec<Value> = (0..101)
        .map(|_| json!({"sku": "A", "quantity": 1, "unitPrice": "1"}))
        .collect();
    for body in [
        json!({"items": [], "currency": "EUR"}),
        json!({"items": too_many, "currency": "EUR"}),
        json!({"items": [{"sku": "A", "quantity": 1, "unitPrice": 1.5}], "currency": "EUR"}),
        json!({"items": [{"sku": "A", "quantity": 1, "unitPrice": "1"}], "currency": "EUR", "extra": true}),
        json!({"currency": "EUR"}),
        json!([1, 2]),
    ] {
        let response = app.post("/api/orders").json(&body).send().await.unwrap();
        let error = assert_error(response, 400, "BadRequest").await;
        assert!(
            error["details"].as_array().is_some_and(|d| !d.is_empty()),
            "{body} → {error}"
        );
    }
    assert_eq!(app.store.len(), 0);
}

#[tokio::test]
async fn get_has_a_strong_etag_and_honours_if_none_match() {
    let app = spawn().await;
    let (id, etag, created) = app.create_order(&sample_order()).await;
    let response = app.get(&format!("/api/orders/{id}")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "etag"), etag);
    assert_eq!(header(&response, "cache-control"), "private");
    assert_eq!(response.json::<Value>().await.unwrap(), created);

    for tag in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"other\", {etag}"),
        "*".to_owned(),
    ] {
        let response = app
            .get(&format!("/api/orders/{id}"))
            .header("if-none-match", &tag)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 304, "If-None-Match: {tag}");
        assert_eq!(header(&response, "etag"), etag);
        assert!(
            response.bytes().await.unwrap().is_empty(),
            "304 has no body"
        );
    }
    let response = app
        .get(&format!("/api/orders/{id}"))
        .header("if-none-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn unknown_orders_are_404() {
    let app = spawn().await;
    for id in ["o_0190f3a1b2c37d4e8f9a0b1c2d3e4f50", "not-an-id", "o_123"] {
        let path = format!("/api/orders/{id}");
        assert_error(app.get(&path).send().await.unwrap(), 404, "NotFound").await;
        let patch = app
            .patch(&path)
            .json(&json!({"status": "paid"}))
            .send()
            .await
            .unwrap();
        assert_error(patch, 404, "NotFound").await;
        assert_error(app.delete(&path).send().await.unwrap(), 404, "NotFound").await;
    }
}

#[tokio::test]
async fn patch_moves_status_along_the_allowed_transitions() {
    let app = spawn().await;
    let (id, etag, _) = app.create_order(&sample_order()).await;
    let path = format!("/api/orders/{id}");
    let response = app
        .patch(&path)
        .header("content-type", "application/merge-patch+json")
        .header("if-match", &etag)
        .body(r#"{"status":"paid"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let new_etag = header(&response, "etag");
    assert_ne!(new_etag, etag);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "paid");

    // Back to pending is not a transition: 409 naming both states, nothing changes.
    let response = app
        .patch(&path)
        .json(&json!({"status": "pending"}))
        .send()
        .await
        .unwrap();
    let error = assert_error(response, 409, "Conflict").await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("'paid'") && message.contains("'pending'"),
        "{message}"
    );

    // Items are locked after pending.
    let response = app
        .patch(&path)
        .json(&json!({"items": [{"sku": "Z", "quantity": 1, "unitPrice": "1"}]}))
        .send()
        .await
        .unwrap();
    assert_error(response, 409, "Conflict").await;

    for next in ["shipped", "delivered"] {
        let response = app
            .patch(&path)
            .json(&json!({"status": next}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let response = app
        .patch(&path)
        .json(&json!({"status": "cancelled"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 409, "Conflict").await;
    let current: Value = app.get(&path).send().await.unwrap().json().await.unwrap();
    assert_eq!(current["status"], "delivered");
}

#[tokio::test]
async fn patch_edits_items_while_pending_and_recomputes_the_total() {
    let app = spawn().await;
    let (id, _, _) = app.create_order(&sample_order()).await;
    let path = format!("/api/orders/{id}");
    let response = app
        .patch(&path)
        .json(&json!({"items": [{"sku": "C-3", "quantity": 4, "unitPrice": "2.50"}], "currency": "USD"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["total"], "10.00");
    assert_eq!(body["currency"], "USD");
    assert_ne!(body["updatedAt"], body["createdAt"]);
}

#[tokio::test]
async fn patch_rejections_change_nothing() {
    let app = spawn().await;
    let (id, etag, _) = app.create_order(&sample_order()).await;
    let path = format!("/api/orders/{id}");
    let before = snapshot(&app).await;

    let response = app
        .patch(&path)
        .header("if-match", "\"stale\"")
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 412, "PreconditionFailed").await;
    let response = app
        .patch(&path)
        .header("if-match", format!("W/{etag}"))
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 412, "PreconditionFailed").await;

    let response = app
        .patch(&path)
        .header("content-type", "text/plain")
        .body("status=paid")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "accept-patch"),
        "application/merge-patch+json, application/json"
    );
    assert_error(response, 415, "UnsupportedMediaType").await;

    for (patch, field) in [
        (json!({"status": null}), "status"),
        (json!({"status": "lost"}), "status"),
        (json!({"total": "0"}), "total"),
        (json!({"owner": "bob"}), "owner"),
        (
            json!({"items": [{"sku": "A", "quantity": 0, "unitPrice": "1"}]}),
            "items[0].quantity",
        ),
        (
            json!({"items": [{"sku": "A", "quantity": "x", "unitPrice": "1"}]}),
            "items[0].quantity",
        ),
        (json!("paid"), "$"),
    ] {
        let response = app.patch(&path).json(&patch).send().await.unwrap();
        let body = assert_error(response, 400, "BadRequest").await;
        assert_eq!(body["details"][0]["field"], field, "{patch}");
    }
    assert_eq!(snapshot(&app).await, before);
    let response = app.get(&path).send().await.unwrap();
    assert_eq!(header(&response, "etag"), etag);
}

#[tokio::test]
async fn delete_honours_if_match() {
    let app = spawn().await;
    let (id, etag, _) = app.create_order(&sample_order()).await;
    let path = format!("/api/orders/{id}");
    let response = app
        .delete(&path)
        .header("if-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_error(response, 412, "PreconditionFailed").await;
    assert_eq!(app.store.len(), 1);
    let response = app
        .delete(&path)
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
    assert_eq!(app.store.len(), 0);
    assert_error(app.delete(&path).send().await.unwrap(), 404, "NotFound").await;
    assert_error(app.get(&path).send().await.unwrap(), 404, "NotFound").await;
}

#[tokio::test]
async fn list_pages_in_a_stable_order() {
    let app = spawn().await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(app.create_order(&sample_order()).await.0);
    }
    let mut seen = Vec::new();
    let mut link = Some("/api/orders?top=3".to_owned());
    let mut pages = 0;
    while let Some(next) = link {
        let response = app.get(&next).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        seen.extend(
            body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_owned()),
        );
        link = body.get("nextLink").map(|l| l.as_str().unwrap().to_owned());
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every order once, in creation order");

    // Default page size and the status filter.
    let path = format!("/api/orders/{}", ids[2]);
    app.patch(&path)
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    let body: Value = app
        .get("/api/orders?status=paid")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paid: Vec<&str> = body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(paid, [ids[2].as_str()]);
    assert!(body.get("nextLink").is_none());
    let body: Value = app
        .get("/api/orders")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["value"].as_array().unwrap().len(), 7);
}

#[tokio::test]
async fn list_rejects_bad_parameters_with_details() {
    let app = spawn().await;
    for (query, field) in [
        ("top=0", "top"),
        ("top=101", "top"),
        ("top=ten", "top"),
        ("status=lost", "status"),
        ("continuationToken=bm90LWFuLWlk", "continuationToken"),
        ("continuationToken=%%%", "continuationToken"),
    ] {
        let response = app
            .get(&format!("/api/orders?{query}"))
            .send()
            .await
            .unwrap();
        let body = assert_error(response, 400, "BadRequest").await;
        assert_eq!(body["details"][0]["field"], field, "{query}");
    }
}

#[tokio::test]
async fn v1_urls_redirect_permanently() {
    let app = spawn().await;
    let id = "o_0190f3a1b2c37d4e8f9a0b1c2d3e4f50";
    for (method, path, status, location) in [
        (
            "GET",
            "/api/v1/orders?top=5&status=paid",
            301,
            "/api/orders?top=5&status=paid",
        ),
        ("HEAD", "/api/v1/orders", 301, "/api/orders"),
        (
            "GET",
            &format!("/api/v1/orders/{id}") as &str,
            301,
            &format!("/api/orders/{id}") as &str,
        ),
        ("POST", "/api/v1/orders", 308, "/api/orders"),
        (
            "PATCH",
            &format!("/api/v1/orders/{id}"),
            308,
            &format!("/api/orders/{id}"),
        ),
        (
            "DELETE",
            &format!("/api/v1/orders/{id}"),
            308,
            &format!("/api/orders/{id}"),
        ),
    ] {
        let response = app.request(method, path).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_eq!(header(&response, "location"), location, "{method} {path}");
    }
}

#[tokio::test]
async fn accept_without_json_is_406() {
    let app = spawn().await;
    let (id, _, _) = app.create_order(&sample_order()).await;
    let response = app
        .get(&format!("/api/orders/{id}"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_error(response, 406, "NotAcceptable").await;
    let response = app
        .get("/api/orders")
        .header("accept", "application/json;q=0")
        .send()
        .await
        .unwrap();
    assert_error(response, 406, "NotAcceptable").await;
    // A client that accepts only problem details cannot take the order, and gets its 406 as one.
    let response = app
        .get(&format!("/api/orders/{id}"))
        .header("accept", "application/problem+json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 406);
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );
    let response = app
        .post("/api/orders")
        .header("accept", "text/csv")
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_error(response, 406, "NotAcceptable").await;
    assert_eq!(app.store.len(), 1);
    for accept in [
        "application/json",
        "*/*",
        "application/*",
        "text/html, application/json;q=0.1",
    ] {
        let response = app
            .get(&format!("/api/orders/{id}"))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{accept}");
    }
}

#[tokio::test]
async fn idempotent_retry_returns_the_first_response() {
    let app = spawn().await;
    let send = |body: Value| {
        app.post("/api/orders")
            .header("idempotency-key", "retry-1")
            .json(&body)
            .send()
    };
    let first = send(sample_order()).await.unwrap();
    assert_eq!(first.status(), 201);
    let first_etag = header(&first, "etag");
    let first_location = header(&first, "location");
    let first_body: Value = first.json().await.unwrap();

    // The same body with other whitespace and member order is the same request.
    let reordered =
        json!({"currency": "EUR", "items": [{"unitPrice": "9.99", "quantity": 2, "sku": "A-1"}]});
    let again = send(reordered).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(header(&again, "etag"), first_etag);
    assert_eq!(header(&again, "location"), first_location);
    assert_eq!(again.json::<Value>().await.unwrap(), first_body);
    assert_eq!(app.store.len(), 1);

    let mut other = sample_order();
    other["currency"] = json!("USD");
    let response = send(other).await.unwrap();
    assert_error(response, 422, "UnprocessableContent").await;
    assert_eq!(app.store.len(), 1);

    // Keys are per owner: bob's identical key is his own.
    let response = app
        .as_user("bob", "POST", "/api/orders")
        .header("idempotency-key", "retry-1")
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let response = app
        .post("/api/orders")
        .header("idempotency-key", "")
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    assert_error(response, 400, "BadRequest").await;
}

#[tokio::test]
async fn fifty_concurrent_creates_make_fifty_orders() {
    let app = spawn().await;
    let requests = (0..50).map(|i| {
        app.post("/api/orders")
            .header("idempotency-key", format!("key-{i}"))
            .json(&sample_order())
            .send()
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.status(), 201);
        ids.insert(
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(ids.len(), 50);
    assert_eq!(app.store.len(), 50);
}

#[tokio::test]
async fn an_idempotent_retry_storm_creates_one_order() {
    let app = spawn().await;
    let requests = (0..20).map(|_| {
        app.post("/api/orders")
            .header("idempotency-key", "storm")
            .json(&sample_order())
            .send()
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut created = std::collections::HashSet::new();
    for response in responses {
        let response = response.unwrap();
        match response.status().as_u16() {
            201 => {
                created.insert(
                    response.json::<Value>().await.unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            409 => {
                assert_eq!(header(&response, "retry-after"), "1");
                assert_error(response, 409, "Conflict").await;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(created.len(), 1, "every 201 names the same order");
    assert_eq!(app.store.len(), 1);
}

#[tokio::test]
async fn concurrent_conditional_patches_have_exactly_one_winner() {
    let app = spawn().await;
    let (id, etag, _) = app.create_order(&sample_order()).await;
    let path = format!("/api/orders/{id}");
    let requests = (0..20).map(|i| {
        app.patch(&path)
            .header("if-match", &etag)
            .json(&json!({"items": [{"sku": format!("W-{i}"), "quantity": 1, "unitPrice": "1"}]}))
            .send()
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut winners = Vec::new();
    for response in responses {
        let response = response.unwrap();
        match response.status().as_u16() {
            200 => winners.push(response.json::<Value>().await.unwrap()),
            412 => {
                assert_error(response, 412, "PreconditionFailed").await;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let current: Value = app.get(&path).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        current["items"], winners[0]["items"],
        "only the winner's change is stored"
    );
}

#[tokio::test]
async fn every_rejected_request_leaves_the_store_unchanged() {
    let mut config = test_config();
    config.max_body_bytes = 2048;
    let app = spawn_with(config).await;
    let (id, etag, _) = app.create_order(&sample_order()).await;
    app.post("/api/orders")
        .header("idempotency-key", "k")
        .json(&sample_order())
        .send()
        .await
        .unwrap();
    let path = format!("/api/orders/{id}");
    let paid = app
        .patch(&path)
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    let paid_etag = header(&paid, "etag");
    let before = snapshot(&app).await;
    assert_ne!(etag, paid_etag);

    let mut other = sample_order();
    other["currency"] = json!("GBP");
    let big = "x".repeat(4096);
    let rejected: Vec<(u16, reqwest::RequestBuilder)> = vec![
        (
            400,
            app.post("/api/orders")
                .json(&json!({"items": [], "currency": "EUR"})),
        ),
        (400, app.patch(&path).json(&json!({"status": "lost"}))),
        (
            404,
            app.patch("/api/orders/o_0190f3a1b2c37d4e8f9a0b1c2d3e4f50")
                .json(&json!({"status": "paid"})),
        ),
        (
            404,
            app.delete("/api/orders/o_0190f3a1b2c37d4e8f9a0b1c2d3e4f50"),
        ),
        (409, app.patch(&path).json(&json!({"status": "pending"}))),
        (
            412,
            app.patch(&path)
                .header("if-match", &etag)
                .json(&json!({"status": "shipped"})),
        ),
        (412, app.delete(&path).header("if-match", &etag)),
        (
            413,
            app.post("/api/orders")
                .header("content-type", "application/json")
                .body(big),
        ),
        (
            415,
            app.post("/api/orders")
                .header("content-type", "text/plain")
                .body("x"),
        ),
        (
            422,
            app.post("/api/orders")
                .header("idempotency-key", "k")
                .json(&other),
        ),
    ];
    for (status, request) in rejected {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(snapshot(&app).await, before, "after the {status}");
        assert_eq!(app.store.len(), 2);
    }
}

#[tokio::test]
async fn malformed_conditions_are_400_and_change_nothing() {
    let app = spawn().await;
    let (id, etag, _) = app.create_order(&sample_order()).await;
    let path = format!("/api/orders/{id}");
    let before = snapshot(&app).await;
    for (method, header_name, value) in [
        ("PATCH", "if-match", "0"),
        ("PATCH", "if-match", "null"),
        ("DELETE", "if-match", "*, \"x\""),
        ("GET", "if-none-match", "v1"),
    ] {
        let mut request = app.request(method, &path).header(header_name, value);
        if method == "PATCH" {
            request = request.json(&json!({"status": "paid"}));
        }
        let body = assert_error(request.send().await.unwrap(), 400, "BadRequest").await;
        let field = body["details"][0]["field"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase();
        assert_eq!(field, header_name, "{method} {value}");
    }
    assert_eq!(snapshot(&app).await, before);
    // The same order, with a well-formed condition, still changes.
    let response = app
        .patch(&path)
        .header("if-match", etag)
        .json(&json!({"status": "paid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
