//! Sampling, asserted on what the local ingestion endpoint receives: at a low rate every
//! failure arrives whole (request, log line, exception, dependency) with a `sampleRate` of 100,
//! successes are sampled at one in a whole `n`, and a caller's `traceparent` decides for the
//! traces it sends, except that a failure is always exported.

use axum::Router;
use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::ingestion::{
    Ingestion, body_json, client, data, dev_token, kind, of_kind_in, operation_id, start_exporting,
    tag,
};
use crate::helpers::serve_on_own_thread;

fn sample_rate(envelope: &Value) -> f64 {
    envelope["sampleRate"]
        .as_f64()
        .unwrap_or_else(|| panic!("no sampleRate: {envelope}"))
}

/// A caller's `traceparent` for `trace_id`, sampled or not.
fn traceparent(trace_id: &str, sampled: bool) -> String {
    format!(
        "00-{trace_id}-00f067aa0ba902b7-{}",
        if sampled { "01" } else { "00" }
    )
}

/// Sends a request that is always exported (its caller sampled it) and waits for it: every
/// span that ended before it has been delivered by then, since spans leave in the order they
/// end, one batch after another.
async fn drain(ingestion: &Ingestion, base: &str, trace_id: &str) {
    let response = client()
        .get(format!("{base}/api/health"))
        .header("traceparent", traceparent(trace_id, true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    ingestion
        .wait_for("the marker request", |e| {
            e.iter()
                .find(|e| kind(e) == "RequestData" && operation_id(e) == trace_id)
                .cloned()
        })
        .await;
}

#[tokio::test]
async fn at_a_low_rate_every_failure_arrives_whole_and_successes_are_sampled() {
    let ingestion = Ingestion::start();
    let handler = start_exporting(
        &ingestion,
        &[
            ("ORDERS_TELEMETRY_SAMPLE_PER_SECOND", "1"),
            ("ORDERS_RATE_LIMIT_PER_MINUTE", "1000000"),
        ],
    );
    let base = handler.base();
    let client = client();
    let token = dev_token("alice");
    let created = client
        .post(format!("{base}/api/orders"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "items": [{"sku": "A-1", "quantity": 1, "unitPrice": "1.00"}],
            "currency": "EUR"
        }))
        .send()
        .await
        .unwrap();
    let id = body_json(created).await["id"].as_str().unwrap().to_owned();

    // 400 successes with 40 failures among them, eight at a time.
    const SUCCESSES: usize = 400;
    let faults = ["error", "panic", "unavailable", "bad-gateway"];
    let outcomes: Vec<(String, u16, String)> = futures_util::stream::iter(0..SUCCESSES + 40)
        .map(|i| {
            let path = if i % 11 == 10 {
                format!("/api/faults/{}", faults[(i / 11) % faults.len()])
            } else {
                format!("/api/orders/{id}")
            };
            let request = client.get(format!("{base}{path}")).bearer_auth(&token);
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let trace_id = if status >= 500 {
                    body_json(response).await["traceId"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                } else {
                    String::new()
                };
                (path, status, trace_id)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let failures: Vec<&(String, u16, String)> = outcomes
        .iter()
        .filter(|(_, status, _)| *status >= 500)
        .collect();
    assert_eq!(failures.len(), 40, "{outcomes:?}");
    assert_eq!(outcomes.len() - failures.len(), SUCCESSES);

    // Every failure: its request, failed, with its log line, and for a 500 its exception, all
    // at a sampleRate of 100 (kept whatever the rate: each counts once).
    for (path, status, trace_id) in &failures {
        let request = ingestion
            .wait_for(&format!("the failed request {trace_id} ({path})"), |e| {
                of_kind_in(e, "RequestData", trace_id)
                    .first()
                    .map(|r| (*r).clone())
            })
            .await;
        assert_eq!(data(&request)["success"], false, "{request}");
        assert_eq!(
            data(&request)["responseCode"],
            status.to_string(),
            "{request}"
        );
        assert_eq!(sample_rate(&request), 100.0, "{request}");
        // What an unsampled request records only once it fails is there.
        assert!(
            data(&request)["url"]
                .as_str()
                .is_some_and(|u| u.ends_with(path.as_str())),
            "{request}"
        );
        let logged = ingestion
            .wait_for(&format!("the log line of {trace_id}"), |e| {
                of_kind_in(e, "MessageData", trace_id)
                    .into_iter()
                    .find(|m| data(m)["message"] == "request failed")
                    .cloned()
            })
            .await;
        assert_eq!(sample_rate(&logged), 100.0, "{logged}");
        if *status == 500 {
            let exception = ingestion
                .wait_for(&format!("the exception of {trace_id}"), |e| {
                    of_kind_in(e, "ExceptionData", trace_id)
                        .first()
                        .map(|x| (*x).clone())
                })
                .await;
            assert_eq!(sample_rate(&exception), 100.0, "{exception}");
            assert_eq!(
                tag(&exception, "ai.operation.parentId"),
                data(&request)["id"],
                "{exception}"
            );
        }
    }

    // Successes: some, each at one in n for a whole n, so that Application Insights counts
    // n for it. At one a second, how many depends on how long the burst took; all 400 would
    // mean the burst took minutes.
    drain(&ingestion, &base, "5a0e5a0e5a0e5a0e5a0e5a0e5a0e5a0e").await;
    let envelopes = ingestion.envelopes();
    let kept: Vec<&Value> = envelopes
        .iter()
        .filter(|e| {
            kind(e) == "RequestData"
                && data(e)["name"] == "GET /api/orders/{id}"
                && data(e)["success"] == true
        })
        .collect();
    assert!(
        kept.len() < SUCCESSES / 2,
        "{} of {SUCCESSES} successes exported at one a second",
        kept.len()
    );
    for request in &kept {
        let one_in = 100.0 / sample_rate(request);
        assert!(
            one_in >= 1.0 && (one_in - one_in.round()).abs() < 1e-9,
            "sampleRate {} is not 100/n: {request}",
            sample_rate(request)
        );
    }
}

#[tokio::test]
async fn a_caller_s_sampled_flag_is_honoured_and_a_failure_overrides_it() {
    let ingestion = Ingestion::start();
    let handler = start_exporting(&ingestion, &[("ORDERS_TELEMETRY_SAMPLE_PER_SECOND", "1")]);
    let base = handler.base();
    let client = client();
    let token = dev_token("alice");
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let unsampled_failure = "1bf7651916cd43dd8448eb211c80319c";
    let sampled = "4bf92f3577b34da6a3ce929d0e0e4736";

    let send = |path: &str, trace_id: &str, flag: bool| {
        client
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .header("traceparent", traceparent(trace_id, flag))
            .send()
    };
    assert_eq!(
        send("/api/orders", unsampled, false)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send("/api/faults/error", unsampled_failure, false)
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(
        send("/api/orders", sampled, true).await.unwrap().status(),
        200
    );

    // The sampled one: exported, in the caller's trace, counted once.
    let request = ingestion
        .wait_for("the sampled request", |e| {
            of_kind_in(e, "RequestData", sampled)
                .first()
                .map(|r| (*r).clone())
        })
        .await;
    assert_eq!(
        tag(&request, "ai.operation.parentId"),
        "00f067aa0ba902b7",
        "{request}"
    );
    assert_eq!(sample_rate(&request), 100.0, "{request}");
    // The failure the caller did not sample: exported all the same, with its exception.
    let failed = ingestion
        .wait_for("the unsampled failure", |e| {
            of_kind_in(e, "RequestData", unsampled_failure)
                .first()
                .map(|r| (*r).clone())
        })
        .await;
    assert_eq!(data(&failed)["success"], false, "{failed}");
    assert_eq!(sample_rate(&failed), 100.0, "{failed}");
    assert_eq!(
        of_kind_in(&ingestion.envelopes(), "ExceptionData", unsampled_failure).len(),
        1
    );
    // The success the caller did not sample: not exported (it ended before the sampled one,
    // which has arrived).
    assert!(
        of_kind_in(&ingestion.envelopes(), "RequestData", unsampled).is_empty(),
        "an unsampled success was exported"
    );
}

#[tokio::test]
async fn an_unsampled_trace_that_fails_is_exported_with_its_dependency() {
    // A stand-in storage account that answers every call 200 with a body no client can use:
    // the call succeeds, the request fails (502).
    let storage_addr = serve_on_own_thread(Router::new().fallback(|| async {
        (
            [("content-type", "application/json")],
            "not the JSON storage sends",
        )
    }));
    let endpoint = format!("http://{storage_addr}/devstoreaccount1");
    let connection = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;\
         AccountKey=c3RhbmQtaW4ta2V5LWZvci10aGUtc2FtcGxpbmctdGVzdA==;\
         TableEndpoint={endpoint};QueueEndpoint={endpoint};BlobEndpoint={endpoint}"
    );
    let ingestion = Ingestion::start();
    let handler = start_exporting(
        &ingestion,
        &[
            ("ORDERS_TELEMETRY_SAMPLE_PER_SECOND", "1"),
            ("AzureWebJobsStorage", connection.as_str()),
        ],
    );
    let trace_id = "7e57ab1e7e57ab1e7e57ab1e7e57ab1e";
    let response = client()
        .get(format!("{}/api/orders", handler.base()))
        .bearer_auth(dev_token("alice"))
        .header("traceparent", traceparent(trace_id, false))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_server_error(), "{}", response.status());

    let request = ingestion
        .wait_for("the failed listing", |e| {
            of_kind_in(e, "RequestData", trace_id)
                .first()
                .map(|r| (*r).clone())
        })
        .await;
    assert_eq!(data(&request)["success"], false, "{request}");
    // Recorded only once the request failed.
    assert_eq!(tag(&request, "ai.user.authUserId"), "alice", "{request}");
    let dependency = ingestion
        .wait_for("its successful storage call", |e| {
            of_kind_in(e, "RemoteDependencyData", trace_id)
                .first()
                .map(|d| (*d).clone())
        })
        .await;
    assert_eq!(data(&dependency)["success"], true, "{dependency}");
    assert_eq!(
        tag(&dependency, "ai.operation.parentId"),
        data(&request)["id"],
        "{dependency}"
    );
    for item in [&request, &dependency] {
        assert_eq!(sample_rate(item), 100.0, "{item}");
    }
}
