//! `Expect: 100-continue` at the socket level: a request that passes authentication and limits
//! is told to continue; a rejected one gets its final status without a 100.

use crate::helpers::{TestApp, spawn_with, test_config};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const BODY: &str = r#"{"items":[{"sku":"A-1","quantity":2,"unitPrice":"9.99"}],"currency":"EUR"}"#;

fn head(token: Option<&str>, content_type: &str, length: usize) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "POST /api/orders HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
    )
}

/// Reads one response head (status line and headers) and returns it.
async fn read_head(reader: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).await.unwrap();
        assert!(n > 0, "connection closed after: {head}");
        head.push_str(&line);
        if line == "\r\n" {
            return head;
        }
    }
}

async fn connect(app: &TestApp) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(app.addr).await.unwrap())
}

#[tokio::test]
async fn an_accepted_upload_gets_100_then_its_final_status() {
    let app = spawn_with(test_config()).await;
    let mut conn = connect(&app).await;
    let token = app.token("alice");
    conn.get_mut()
        .write_all(head(Some(&token), "application/json", BODY.len()).as_bytes())
        .await
        .unwrap();
    let interim = read_head(&mut conn).await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    conn.get_mut().write_all(BODY.as_bytes()).await.unwrap();
    let last = read_head(&mut conn).await;
    assert!(last.starts_with("HTTP/1.1 201"), "{last}");
    assert_eq!(app.store.len(), 1);
}

/// Sends only the head and returns the first response head the server sends.
async fn rejected_without_continue(app: &TestApp, head: String) -> String {
    let mut conn = connect(app).await;
    conn.get_mut().write_all(head.as_bytes()).await.unwrap();
    let first = read_head(&mut conn).await;
    assert!(
        !first.starts_with("HTTP/1.1 100"),
        "no 100 before a rejection: {first}"
    );
    let length: usize = first
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0; length];
    conn.read_exact(&mut body).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["status"].as_u64().unwrap().to_string(), first[9..12]);
    first
}

#[tokio::test]
async fn an_anonymous_upload_gets_401_without_100() {
    let app = spawn_with(test_config()).await;
    let first = rejected_without_continue(&app, head(None, "application/json", BODY.len())).await;
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    assert!(
        first
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer")
    );
    // Over the limit and anonymous: still 401, authentication comes first.
    let first = rejected_without_continue(&app, head(None, "application/json", 10_000_000)).await;
    assert!(first.starts_with("HTTP/1.1 401"), "{first}");
    assert_eq!(app.store.len(), 0);
}

#[tokio::test]
async fn an_oversized_or_non_json_upload_gets_its_final_status_without_100() {
    let app = spawn_with(test_config()).await;
    let token = app.token("alice");
    let first =
        rejected_without_continue(&app, head(Some(&token), "application/json", 10_000_000)).await;
    assert!(first.starts_with("HTTP/1.1 413"), "{first}");
    let first = rejected_without_continue(&app, head(Some(&token), "text/plain", 10)).await;
    assert!(first.starts_with("HTTP/1.1 415"), "{first}");
    let scopeless = app.token_with("alice", &["Orders.Read"]);
    let first =
        rejected_without_continue(&app, head(Some(&scopeless), "application/json", BODY.len()))
            .await;
    assert!(first.starts_with("HTTP/1.1 403"), "{first}");
    assert_eq!(app.store.len(), 0);
}
