//! Walks the README's status-code table: every row marked live is produced here for real, and a
//! live row without a scenario fails the test.

use std::time::Duration;

use crate::helpers::{TestApp, assert_error, header, sample_order, spawn_with, test_config};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// (code, live) for each row of the README's status-code table.
fn readme_rows() -> Vec<(u16, bool)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Status codes")
        .nth(1)
        .expect("status code section");
    section
        .lines()
        .skip_while(|line| !line.starts_with("| code"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let code = cells[0].parse().expect("status code");
            let live = match *cells.last().unwrap() {
                "yes" => true,
                "not yet" => false,
                other => {
                    panic!("live column of {code} must be 'yes' or 'not yet', found '{other}'")
                }
            };
            (code, live)
        })
        .collect()
}

/// Default deadlines: a loaded machine must not turn any row into a 504 or 408. The rows that
/// need short ones get an app of their own.
async fn app() -> TestApp {
    let mut config = test_config();
    config.max_body_bytes = 1_024;
    spawn_with(config).await
}

async fn order(app: &TestApp) -> (String, String) {
    let (id, etag, _) = app.create_order(&sample_order()).await;
    (format!("/api/orders/{id}"), etag)
}

/// Produces `code` for real and asserts it with its headers. `false` = no scenario for the code.
async fn exercise(app: &TestApp, code: u16) -> bool {
    match code {
        200 => {
            let (path, _) = order(app).await;
            let response = app.get(&path).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert!(response.headers().contains_key("etag"));
        }
        201 => {
            let response = app
                .post("/api/orders")
                .json(&sample_order())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            assert!(header(&response, "location").starts_with("/api/orders/o_"));
            assert!(response.headers().contains_key("etag"));
        }
        204 => {
            let (path, _) = order(app).await;
            assert_eq!(app.delete(&path).send().await.unwrap().status(), 204);
        }
        301 => {
            let response = app.get("/api/v1/orders?top=1").send().await.unwrap();
            assert_eq!(response.status(), 301);
            assert_eq!(header(&response, "location"), "/api/orders?top=1");
        }
        304 => {
            let (path, etag) = order(app).await;
            let response = app
                .get(&path)
                .header("if-none-match", &etag)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 304);
            assert_eq!(header(&response, "etag"), etag);
        }
        400 => {
            let response = app
                .post("/api/orders")
                .json(&json!({"items": [], "currency": "EUR"}))
                .send()
                .await
                .unwrap();
            let body = assert_error(response, 400, "BadRequest").await;
            assert!(body["details"].is_array());
        }
        404 => {
            assert_error(
                app.get("/api/orders/o_0190f3a1b2c37d4e8f9a0b1c2d3e4f50")
                    .send()
                    .await
                    .unwrap(),
                404,
                "NotFound",
            )
            .await;
        }
        405 => {
            let response = app.request("PUT", "/api/orders").send().await.unwrap();
            assert!(response.headers().contains_key("allow"));
            assert_error(response, 405, "MethodNotAllowed").await;
        }
        406 => {
            let response = app
                .get("/api/orders")
                .header("accept", "text/html")
                .send()
                .await
                .unwrap();
            assert_error(response, 406, "NotAcceptable").await;
        }
        408 => {
            let mut config = test_config();
            config.body_timeout = Duration::from_millis(300);
            let app = spawn_with(config).await;
            // The body never comes: only the body deadline can answer.
            let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
            let head = format!(
                "POST /api/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
                app.token("alice")
            );
            socket.write_all(head.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            socket.read_to_end(&mut raw).await.unwrap();
            let raw = String::from_utf8_lossy(&raw).to_ascii_lowercase();
            assert!(raw.starts_with("http/1.1 408"), "{raw}");
            assert!(raw.contains("connection: close"));
        }
        409 => {
            let (path, _) = order(app).await;
            app.patch(&path)
                .json(&json!({"status": "cancelled"}))
                .send()
                .await
                .unwrap();
            let response = app
                .patch(&path)
                .json(&json!({"status": "paid"}))
                .send()
                .await
                .unwrap();
            assert_error(response, 409, "Conflict").await;
        }
        412 => {
            let (path, _) = order(app).await;
            let response = app
                .delete(&path)
                .header("if-match", "\"old\"")
                .send()
                .await
                .unwrap();
            assert_error(response, 412, "PreconditionFailed").await;
        }
        413 => {
            let response = app
                .post("/api/orders")
                .header("content-type", "application/json")
                .body("x".repeat(2_048))
                .send()
                .await
                .unwrap();
            assert_error(response, 413, "ContentTooLarge").await;
        }
        415 => {
            let (path, _) = order(app).await;
            let response = app
                .patch(&path)
                .header("content-type", "text/plain")
                .body("x")
                .send()
                .await
                .unwrap();
            assert!(response.headers().contains_key("accept-patch"));
            assert_error(response, 415, "UnsupportedMediaType").await;
        }
        422 => {
            let send = |currency: &str| {
                let mut body = sample_order();
                body["currency"] = json!(currency);
                app.post("/api/orders")
                    .header("idempotency-key", "table-422")
                    .json(&body)
                    .send()
            };
            assert_eq!(send("EUR").await.unwrap().status(), 201);
            assert_error(send("USD").await.unwrap(), 422, "UnprocessableContent").await;
        }
        500 => {
            assert_error(
                app.get("/api/faults/panic").send().await.unwrap(),
                500,
                "InternalServerError",
            )
            .await;
        }
        501 => {
            assert_error(
                app.request("PURGE", "/api/orders").send().await.unwrap(),
                501,
                "NotImplemented",
            )
            .await;
        }
        502 => {
            assert_error(
                app.get("/api/faults/bad-gateway").send().await.unwrap(),
                502,
                "BadGateway",
            )
            .await;
        }
        503 => {
            let response = app.get("/api/faults/unavailable").send().await.unwrap();
            assert!(response.headers().contains_key("retry-after"));
            assert_error(response, 503, "ServiceUnavailable").await;
        }
        504 => {
            let mut config = test_config();
            config.request_timeout = Duration::from_millis(200);
            let app = spawn_with(config).await;
            // The handler would sleep ten minutes: only the deadline can end this request.
            let response = app.get("/api/faults/slow?ms=600000").send().await.unwrap();
            assert_error(response, 504, "GatewayTimeout").await;
        }
        100 => {
            let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
            let body = sample_order().to_string();
            let head = format!(
                "POST /api/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                app.token("alice"),
                body.len()
            );
            socket.write_all(head.as_bytes()).await.unwrap();
            let mut interim = [0u8; 25];
            socket.read_exact(&mut interim).await.unwrap();
            assert!(
                interim.starts_with(b"HTTP/1.1 100 Continue"),
                "{}",
                String::from_utf8_lossy(&interim)
            );
            socket.write_all(body.as_bytes()).await.unwrap();
            let mut rest = [0u8; 64];
            let n = socket.read(&mut rest).await.unwrap();
            let rest = String::from_utf8_lossy(&rest[..n]);
            assert!(rest.trim_start().starts_with("HTTP/1.1 201"), "{rest}");
        }
        101 => {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = format!("ws://{}/api/orders/events", app.addr)
                .into_client_request()
                .unwrap();
            let bearer = format!("Bearer {}", app.token("alice"));
            request
                .headers_mut()
                .insert("authorization", bearer.parse().unwrap());
            let (_socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
            assert_eq!(response.status(), 101);
            assert!(response.headers().contains_key("upgrade"));
        }
        202 => {
            let response = app
                .post("/api/exports")
                .json(&json!({"format": "ndjson"}))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            assert!(header(&response, "location").starts_with("/api/exports/"));
            assert!(response.headers().contains_key("retry-after"));
        }
        302 => {
            let response = app
                .post("/api/exports")
                .json(&json!({"format": "csv"}))
                .send()
                .await
                .unwrap();
            let location = header(&response, "location");
            let _worker = orders_api::worker::poller::spawn(
                app.state.store.clone(),
                app.state.exports.clone(),
                orders_api::worker::poller::PollerOptions {
                    idle_wait: Duration::from_millis(20),
                    ..Default::default()
                },
            );
            let download = crate::helpers::eventually("the export finishing", || async {
                let response = app
                    .get(&format!("{location}/download"))
                    .send()
                    .await
                    .unwrap();
                match response.status().as_u16() {
                    302 => Ok(response),
                    409 => Err("409: not finished yet".to_owned()),
                    other => panic!("download answered {other}"),
                }
            })
            .await;
            assert_eq!(header(&download, "location"), format!("{location}/file"));
        }
        401 => {
            let response = app.anonymous("GET", "/api/orders").send().await.unwrap();
            assert_eq!(
                header(&response, "www-authenticate"),
                "Bearer realm=\"orders-api\""
            );
            assert_error(response, 401, "Unauthorized").await;
            let response = app
                .anonymous("GET", "/api/orders")
                .bearer_auth("not.a.token")
                .send()
                .await
                .unwrap();
            assert!(header(&response, "www-authenticate").contains("error=\"invalid_token\""));
            assert_error(response, 401, "Unauthorized").await;
        }
        403 => {
            let response = app
                .anonymous("POST", "/api/orders")
                .bearer_auth(app.token_with("alice", &["Orders.Read"]))
                .json(&sample_order())
                .send()
                .await
                .unwrap();
            assert_eq!(
                header(&response, "www-authenticate"),
                "Bearer error=\"insufficient_scope\", scope=\"Orders.Write\""
            );
            assert_error(response, 403, "Forbidden").await;
        }
        429 => {
            let mut config = test_config();
            config.rate_limit_per_minute = 1;
            let limited = spawn_with(config).await;
            assert_eq!(
                limited.get("/api/orders").send().await.unwrap().status(),
                200
            );
            let response = limited.get("/api/orders").send().await.unwrap();
            assert!(response.headers().contains_key("retry-after"));
            assert_error(response, 429, "TooManyRequests").await;
        }
        414 => {
            let path = format!("/api/orders?x={}", "y".repeat(9 * 1024));
            assert_error(app.get(&path).send().await.unwrap(), 414, "UriTooLong").await;
        }
        431 => {
            let response = app
                .get("/api/orders")
                .header("x-padding", "p".repeat(20 * 1024))
                .send()
                .await
                .unwrap();
            assert_error(response, 431, "RequestHeaderFieldsTooLarge").await;
        }
        _ => return false,
    }
    true
}

#[tokio::test]
async fn every_live_row_of_the_readme_table_is_produced() {
    let rows = readme_rows();
    let codes: Vec<u16> = rows.iter().map(|(code, _)| *code).collect();
    for expected in [
        100, 101, 200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 406, 408, 409, 412,
        413, 414, 415, 422, 429, 500, 501, 502, 503, 504,
    ] {
        assert!(codes.contains(&expected), "the table lists {expected}");
    }
    let app = app().await;
    for (code, live) in rows {
        if live {
            assert!(
                exercise(&app, code).await,
                "row {code} is marked live but has no scenario here"
            );
        }
    }
}
