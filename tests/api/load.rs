//! A mixed load over 128 connections: valid, invalid and unauthenticated calls. Nothing may
//! fail with a 5xx other than load shedding's 503, and afterwards the store holds exactly the
//! orders whose creation was answered 201.

use std::collections::HashSet;

use crate::helpers::{sample_order, spawn_with, test_config};
use futures_util::StreamExt;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_mixed_requests_at_128_connections() {
    let mut config = test_config();
    config.rate_limit_per_minute = 4_000_000_000;
    let app = spawn_with(config).await;
    let (existing, _, _) = app.create_order(&sample_order()).await;
    let alice = app.token("alice");

    let outcomes: Vec<(usize, u16, Option<String>)> = futures_util::stream::iter(0..20_000usize)
        .map(|i| {
            let request = match i % 8 {
                0 | 1 => app.post("/api/orders").json(&sample_order()),
                2 => app
                    .post("/api/orders")
                    .json(&json!({"items": [], "currency": "EUR"})),
                3 => app
                    .post("/api/orders")
                    .header("content-type", "application/json")
                    .body("{\"items\":"),
                4 => app.anonymous("POST", "/api/orders").json(&sample_order()),
                5 => app.get(&format!("/api/orders/{existing}")),
                6 => app
                    .anonymous("GET", "/api/orders")
                    .bearer_auth(format!("{alice}x")),
                _ => app.get("/api/orders?top=5"),
            };
            async move {
                let response = request.send().await.expect("every request is answered");
                let status = response.status().as_u16();
                let id = if status == 201 {
                    let body: serde_json::Value = response.json().await.unwrap();
                    body["id"].as_str().map(str::to_owned)
                } else {
                    None
                };
                (i, status, id)
            }
        })
        .buffer_unordered(128)
        .collect()
        .await;

    let mut created = HashSet::new();
    for (i, status, id) in &outcomes {
        assert!(
            *status < 500 || *status == 503,
            "request {i} (kind {}) got {status}",
            i % 8
        );
        if let Some(id) = id {
            created.insert(id.clone());
        }
    }
    let count = |wanted: u16| outcomes.iter().filter(|(_, s, _)| *s == wanted).count();
    assert!(count(201) > 0 && count(400) > 0 && count(401) > 0 && count(200) > 0);
    assert_eq!(created.len(), count(201));
    // Exactly the created orders, plus the one made before the load.
    assert_eq!(app.store.len(), created.len() + 1);
}
