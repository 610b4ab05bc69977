//! An `Idempotency-Key` flood: one caller sending keyed POSTs with a new key each time. What it
//! can make the service hold is bounded per caller, and holding many keys costs nobody time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use orders_api::state::AppState;
use orders_api::store::memory::MemoryOrderStore;
use orders_api::store::{Claim, OrderStore};
use time::OffsetDateTime;

use crate::helpers::{assert_error, header, sample_order, spawn_state, test_config};

#[tokio::test]
async fn a_flood_of_new_keys_is_bounded_per_caller() {
    const LIMIT: usize = 100;
    let mut config = test_config();
    config.rate_limit_per_minute = 1_000_000;
    let store = Arc::new(MemoryOrderStore::with_key_limit(LIMIT));
    let app = spawn_state(AppState::new(config, store.clone()), store).await;
    let post = |user: &str, key: String| {
        app.as_user(user, "POST", "/api/orders")
            .header("idempotency-key", key)
            .json(&sample_order())
            .send()
    };

    // Mallory sends ten times as many new keys as a caller may hold.
    let outcomes: Vec<(usize, u16, serde_json::Value)> = futures_util::stream::iter(0..LIMIT * 10)
        .map(|i| {
            let send = post("mallory", format!("flood-{i}"));
            async move {
                let response = send.await.unwrap();
                let status = response.status().as_u16();
                (i, status, response.json().await.unwrap())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let count = |status: u16| outcomes.iter().filter(|(_, s, _)| *s == status).count();
    assert_eq!(count(201), LIMIT, "created");
    assert_eq!(count(429), LIMIT * 9, "refused");
    // What the flood holds: LIMIT keys, and the orders they created, nothing more.
    assert_eq!(app.store.idempotency_keys("mallory"), LIMIT);
    assert_eq!(app.store.len(), LIMIT);

    let refused = post("mallory", "one-more".to_owned()).await.unwrap();
    let retry_after: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!(
        (1..=86_400).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_error(refused, 429, "TooManyRequests").await;
    // Keys held keep their promise: a retry gets the first response.
    let (first, _, created) = outcomes.iter().find(|(_, s, _)| *s == 201).unwrap();
    let retry = post("mallory", format!("flood-{first}")).await.unwrap();
    assert_eq!(retry.status(), 201);
    let replayed: serde_json::Value = retry.json().await.unwrap();
    assert_eq!(replayed["id"], created["id"]);
    // Everyone else is unaffected.
    assert_eq!(
        post("alice", "first".to_owned()).await.unwrap().status(),
        201
    );
}

/// Claims of a new key by each of `owners`, timed; then given back (untimed), so the store
/// holds what it held before.
async fn time_claims(store: &MemoryOrderStore, owners: &[String]) -> Duration {
    let now = OffsetDateTime::now_utc();
    let started = Instant::now();
    for owner in owners {
        let claim = store.claim_idempotency_key(owner, "key", "fp", now).await;
        assert_eq!(claim.unwrap(), Claim::Claimed);
    }
    let elapsed = started.elapsed();
    for owner in owners {
        store.release_idempotency_key(owner, "key").await.unwrap();
    }
    elapsed
}

#[tokio::test]
async fn claims_cost_the_same_with_a_hundred_thousand_keys_held() {
    // The same claims on an empty store and on one holding 100,000 keys (1,000 owners at their
    // limit of 100), interleaved so that whatever else loads the machine weighs on both. A scan
    // of every key per claim made the full store about a hundred times slower; a lookup is not.
    let empty = MemoryOrderStore::with_key_limit(100);
    let full = MemoryOrderStore::with_key_limit(100);
    let now = OffsetDateTime::now_utc();
    for owner in 0..1_000 {
        for key in 0..100 {
            let claim = full
                .claim_idempotency_key(&format!("owner-{owner}"), &format!("k{key}"), "fp", now)
                .await
                .unwrap();
            assert_eq!(claim, Claim::Claimed);
        }
    }
    let probes: Vec<String> = (0..1_000).map(|i| format!("probe-{i}")).collect();
    let mut ratios = Vec::new();
    for _ in 0..5 {
        let on_empty = time_claims(&empty, &probes).await;
        let on_full = time_claims(&full, &probes).await;
        ratios.push(on_full.as_secs_f64() / on_empty.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    eprintln!("claim time with 100,000 keys held / with none: {ratios:?}");
    assert!(median < 10.0, "median ratio {median:.1}: {ratios:?}");
}
