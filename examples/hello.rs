//! Benchmark baselines: bare axum on the same axum, hyper and tokio versions as the service, with
//! nothing else in the way. `PORT` picks the port (0 = any; the port is printed).
//!
//! - `GET /`: "hello", the least an axum route can do.
//! - `GET /api/orders/{id}`: the service's cheapest real work without the service's own costs:
//!   a path parameter, and an order-shaped JSON object written by `serde_json`.

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Item<'a> {
    sku: &'a str,
    quantity: u32,
    unit_price: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Order<'a> {
    id: String,
    status: &'a str,
    currency: &'a str,
    items: [Item<'a>; 1],
    total: &'a str,
    created_at: &'a str,
    updated_at: &'a str,
}

async fn order(Path(id): Path<String>) -> axum::Json<Order<'static>> {
    axum::Json(Order {
        id,
        status: "pending",
        currency: "EUR",
        items: [Item {
            sku: "A-1",
            quantity: 2,
            unit_price: "9.99",
        }],
        total: "19.98",
        created_at: "2025-01-01T00:00:00Z",
        updated_at: "2025-01-01T00:00:00Z",
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/api/orders/{id}", get(order));
    axum::serve(listener, app).await
}
