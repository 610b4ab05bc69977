//! Idempotency keys in both stores: replay, takeover of abandoned claims, and the bound on
//! what one owner holds (exact under concurrent claims).

use std::sync::Arc;

use orders_api::store::{Claim, ListQuery, OrderStore, StoredResponse};
use time::OffsetDateTime;

use super::{KEY_LIMIT, new_order, owner};

pub(super) async fn idempotency_replay(store: Arc<dyn OrderStore>) {
    let owner = owner();
    let now = OffsetDateTime::now_utc();
    let claim = store
        .claim_idempotency_key(&owner, "key/with#odd?chars", "fp1", now)
        .await
        .unwrap();
    assert_eq!(claim, Claim::Claimed);
    // While in progress, a retry learns so (and with which body).
    assert_eq!(
        store
            .claim_idempotency_key(&owner, "key/with#odd?chars", "fp1", now)
            .await
            .unwrap(),
        Claim::InProgress {
            fingerprint: "fp1".to_owned()
        }
    );
    let created = store.insert(&new_order(&owner, "A-1")).await.unwrap();
    let response = StoredResponse {
        status: 201,
        order: created.clone(),
    };
    store
        .complete_idempotency_key(&owner, "key/with#odd?chars", "fp1", &response, now)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_idempotency_key(&owner, "key/with#odd?chars", "fp1", now)
            .await
            .unwrap(),
        Claim::Completed {
            fingerprint: "fp1".to_owned(),
            response: response.clone()
        }
    );
    // A different body gets the first fingerprint back, so the caller can refuse it.
    assert!(matches!(
        store.claim_idempotency_key(&owner, "key/with#odd?chars", "fp2", now).await.unwrap(),
        Claim::Completed { fingerprint, .. } if fingerprint == "fp1"
    ));
    // Keys are forgotten after the retention period.
    let later = now + orders_api::store::IDEMPOTENCY_RETENTION + time::Duration::seconds(1);
    assert_eq!(
        store
            .claim_idempotency_key(&owner, "key/with#odd?chars", "fp3", later)
            .await
            .unwrap(),
        Claim::Claimed
    );
    // Released keys can be claimed again; idempotency records are not listed as orders.
    store
        .claim_idempotency_key(&owner, "other", "fp", now)
        .await
        .unwrap();
    store
        .release_idempotency_key(&owner, "other")
        .await
        .unwrap();
    store
        .release_idempotency_key(&owner, "never-claimed")
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_idempotency_key(&owner, "other", "fp", now)
            .await
            .unwrap(),
        Claim::Claimed
    );
    let page = store
        .list(
            &owner,
            &ListQuery {
                status: None,
                top: 100,
                continuation: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.orders, vec![created]);
}

pub(super) async fn abandoned_idempotency_claims_are_taken_over(store: Arc<dyn OrderStore>) {
    let owner = owner();
    let then = OffsetDateTime::now_utc();
    assert_eq!(
        store
            .claim_idempotency_key(&owner, "k", "fp", then)
            .await
            .unwrap(),
        Claim::Claimed
    );
    let later = then + orders_api::store::IDEMPOTENCY_CLAIM_TIMEOUT + time::Duration::seconds(1);
    // Many retries race for the abandoned key: exactly one takes it over.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let owner = owner.clone();
            tokio::spawn(async move {
                store
                    .claim_idempotency_key(&owner, "k", "fp", later)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut claimed = 0;
    for task in tasks {
        if task.await.unwrap() == Claim::Claimed {
            claimed += 1;
        }
    }
    assert_eq!(claimed, 1);
}

pub(super) async fn idempotency_keys_are_bounded_per_owner(store: Arc<dyn OrderStore>) {
    let (owner, other) = (owner(), owner());
    let start = OffsetDateTime::now_utc();
    let claim = |owner: &str, key: &str, at: OffsetDateTime| {
        let (store, owner, key) = (store.clone(), owner.to_owned(), key.to_owned());
        async move {
            store
                .claim_idempotency_key(&owner, &key, "fp", at)
                .await
                .unwrap()
        }
    };
    for i in 0..KEY_LIMIT {
        let at = start + time::Duration::seconds(i as i64);
        assert_eq!(claim(&owner, &format!("k{i}"), at).await, Claim::Claimed);
    }
    // One more new key is refused, with when one is forgotten (within the day and an hour).
    let soon = start + time::Duration::minutes(1);
    match claim(&owner, "one-more", soon).await {
        Claim::LimitReached { limit, retry_after } => {
            assert_eq!(limit, KEY_LIMIT);
            assert!(
                retry_after > time::Duration::ZERO && retry_after <= time::Duration::hours(25),
                "{retry_after}"
            );
        }
        other => panic!("the key beyond the limit was {other:?}"),
    }
    // The keys held keep answering; other owners have keys of their own.
    assert!(matches!(
        claim(&owner, "k0", soon).await,
        Claim::InProgress { .. }
    ));
    assert_eq!(claim(&other, "k0", soon).await, Claim::Claimed);
    // Once the held keys are forgotten, new keys are taken again, the refused one included.
    let later = start + orders_api::store::IDEMPOTENCY_RETENTION + time::Duration::hours(2);
    assert_eq!(claim(&owner, "one-more", later).await, Claim::Claimed);
    assert_eq!(claim(&owner, "k0", later).await, Claim::Claimed);
}

pub(super) async fn concurrent_new_keys_are_counted_exactly(store: Arc<dyn OrderStore>) {
    let owner = owner();
    let now = OffsetDateTime::now_utc();
    for i in 0..KEY_LIMIT - 2 {
        let claim = store
            .claim_idempotency_key(&owner, &format!("k{i}"), "fp", now)
            .await
            .unwrap();
        assert_eq!(claim, Claim::Claimed);
    }
    // Eight new keys at once for the last two places: exactly two are taken.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, owner) = (store.clone(), owner.clone());
            tokio::spawn(async move {
                store
                    .claim_idempotency_key(&owner, &format!("race{i}"), "fp", now)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Claim::Claimed => claimed.push(i),
            Claim::LimitReached { .. } => {}
            other => panic!("race{i}: {other:?}"),
        }
    }
    assert_eq!(claimed.len(), 2, "claimed: {claimed:?}");
    // A refused key left nothing behind: it is new again once there is room.
    store
        .release_idempotency_key(&owner, &format!("race{}", claimed[0]))
        .await
        .unwrap();
    let refused = (0..8).find(|i| !claimed.contains(i)).unwrap();
    let later = now + orders_api::store::IDEMPOTENCY_RETENTION + time::Duration::hours(2);
    assert_eq!(
        store
            .claim_idempotency_key(&owner, &format!("race{refused}"), "fp", later)
            .await
            .unwrap(),
        Claim::Claimed
    );
}
