//! One storage behaviour suite, run against both stores: the in-memory store and the Table
//! Storage store on Azurite (`ORDERS_TEST_STORAGE`; without it the Azure half fails). Each
//! Azure test uses a table of its own, so tests run in parallel.

use std::collections::HashSet;
use std::sync::Arc;

use orders_api::domain::{ItemInput, NewOrder, Order, OrderId, OrderStatus};
use orders_api::store::azure::TableOrderStore;
use orders_api::store::memory::MemoryOrderStore;
use orders_api::store::{ListQuery, OrderStore, StoreError};
use time::OffsetDateTime;

mod keys;
use keys::{
    abandoned_idempotency_claims_are_taken_over, concurrent_new_keys_are_counted_exactly,
    idempotency_keys_are_bounded_per_owner, idempotency_replay,
};

/// Idempotency keys an owner may hold in the suite's stores: small, so the bound is reached.
const KEY_LIMIT: usize = 12;

fn memory_store() -> Arc<dyn OrderStore> {
    Arc::new(MemoryOrderStore::with_key_limit(KEY_LIMIT))
}

fn azure_store() -> Arc<dyn OrderStore> {
    let client = crate::helpers::azure::shared_client();
    let names = crate::helpers::azure::unique_names();
    Arc::new(TableOrderStore::new(client, &names.orders_table).with_key_limit(KEY_LIMIT))
}

/// Each behaviour runs once per store.
macro_rules! suite {
    ($($behaviour:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    super::$behaviour(super::memory_store()).await;
                }
            )*
        }
        mod azure {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    super::$behaviour(super::azure_store()).await;
                }
            )*
        }
    };
}

suite!(
    create_read_update_delete,
    etag_conflicts,
    concurrent_conditional_updates_have_one_winner,
    continuation_across_250_orders,
    continuation_with_a_status_filter,
    idempotency_replay,
    abandoned_idempotency_claims_are_taken_over,
    idempotency_keys_are_bounded_per_owner,
    concurrent_new_keys_are_counted_exactly,
    owner_isolation,
    health_is_ok,
);

fn new_order(owner: &str, sku: &str) -> Order {
    let items = [ItemInput {
        sku,
        quantity: 2,
        unit_price: "9.99",
    }];
    let new = NewOrder::parse(&items, "EUR").unwrap();
    Order::create(owner, new, OffsetDateTime::now_utc())
}

fn owner() -> String {
    format!("user-{}", crate::helpers::azure::unique_suffix())
}

async fn create_read_update_delete(store: Arc<dyn OrderStore>) {
    let owner = owner();
    let order = new_order(&owner, "A-1");
    let created = store.insert(&order).await.unwrap();
    assert!(!created.etag.is_empty());
    assert!(
        created
            .etag
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"')
    );

    let read = store.get(&owner, &order.id).await.unwrap().unwrap();
    assert_eq!(read, created, "read back exactly what was stored");

    assert!(matches!(
        store.insert(&order).await,
        Err(StoreError::AlreadyExists)
    ));

    let mut paid = read.clone();
    paid.status = OrderStatus::Paid;
    let updated = store.replace(&paid, &read.etag).await.unwrap();
    assert_ne!(updated.etag, read.etag, "every write gets a new ETag");
    let read = store.get(&owner, &order.id).await.unwrap().unwrap();
    assert_eq!(read.status, OrderStatus::Paid);
    assert_eq!(read.etag, updated.etag);

    store
        .delete(&owner, &order.id, Some(&updated.etag))
        .await
        .unwrap();
    assert_eq!(store.get(&owner, &order.id).await.unwrap(), None);
    assert!(matches!(
        store.delete(&owner, &order.id, None).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.replace(&paid, &updated.etag).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get(&owner, &OrderId::generate()).await.unwrap(), None);
}

async fn etag_conflicts(store: Arc<dyn OrderStore>) {
    let owner = owner();
    let created = store.insert(&new_order(&owner, "A-1")).await.unwrap();
    let mut first = created.clone();
    first.status = OrderStatus::Paid;
    let after_first = store.replace(&first, &created.etag).await.unwrap();

    // A writer holding the old ETag loses, and changes nothing.
    let mut stale = created.clone();
    stale.status = OrderStatus::Cancelled;
    assert!(matches!(
        store.replace(&stale, &created.etag).await,
        Err(StoreError::EtagMismatch)
    ));
    assert!(matches!(
        store.replace(&stale, "not-an-etag-we-issued").await,
        Err(StoreError::EtagMismatch)
    ));
    assert!(matches!(
        store.delete(&owner, &created.id, Some(&created.etag)).await,
        Err(StoreError::EtagMismatch)
    ));
    let current = store.get(&owner, &created.id).await.unwrap().unwrap();
    assert_eq!(current.status, OrderStatus::Paid);
    assert_eq!(current.etag, after_first.etag);
}

async fn concurrent_conditional_updates_have_one_winner(store: Arc<dyn OrderStore>) {
    let owner = owner();
    let created = store.insert(&new_order(&owner, "A-1")).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            let mut change = created.clone();
            change.items[0].quantity = orders_api::domain::Quantity::parse(i + 1).unwrap();
            let etag = created.etag.clone();
            tokio::spawn(async move { store.replace(&change, &etag).await })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(order) => winners.push(order),
            Err(StoreError::EtagMismatch) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one conditional update wins");
    let current = store.get(&owner, &created.id).await.unwrap().unwrap();
    assert_eq!(current, winners[0], "the winner's write is what is stored");
}

async fn collect_pages(store: &dyn OrderStore, owner: &str, query: ListQuery) -> Vec<Order> {
    let mut all = Vec::new();
    let mut query = query;
    for _ in 0..1000 {
        let page = store.list(owner, &query).await.unwrap();
        assert!(page.orders.len() <= query.top);
        all.extend(page.orders);
        match page.continuation {
            Some(token) => query.continuation = Some(token),
            None => return all,
        }
    }
    panic!("listing never ended");
}

async fn continuation_across_250_orders(store: Arc<dyn OrderStore>) {
    let owner = owner();
    let mut ids = Vec::new();
    for i in 0..250 {
        let order = store
            .insert(&new_order(&owner, &format!("S-{i}")))
            .await
            .unwrap();
        ids.push(order.id);
    }
    let listed = collect_pages(
        store.as_ref(),
        &owner,
        ListQuery {
            status: None,
            top: 40,
            continuation: None,
        },
    )
    .await;
    let listed_ids: Vec<OrderId> = listed.iter().map(|o| o.id.clone()).collect();
    assert_eq!(listed_ids, ids, "every order once, in creation order");

    // Tokens are opaque and checked: garbage is refused, not passed to the store.
    let bad = store
        .list(
            &owner,
            &ListQuery {
                status: None,
                top: 10,
                continuation: Some("definitely not a token".to_owned()),
            },
        )
        .await;
    assert!(matches!(bad, Err(StoreError::BadContinuation)));
}

async fn continuation_with_a_status_filter(store: Arc<dyn OrderStore>) {
    let owner = owner();
    let mut paid = HashSet::new();
    for i in 0..30 {
        let order = store
            .insert(&new_order(&owner, &format!("S-{i}")))
            .await
            .unwrap();
        if i % 3 == 0 {
            let mut change = order.clone();
            change.status = OrderStatus::Paid;
            store.replace(&change, &order.etag).await.unwrap();
            paid.insert(order.id);
        }
    }
    let listed = collect_pages(
        store.as_ref(),
        &owner,
        ListQuery {
            status: Some(OrderStatus::Paid),
            top: 4,
            continuation: None,
        },
    )
    .await;
    assert!(listed.iter().all(|o| o.status == OrderStatus::Paid));
    let ids: HashSet<OrderId> = listed.into_iter().map(|o| o.id).collect();
    assert_eq!(ids, paid);
}

async fn owner_isolation(store: Arc<dyn OrderStore>) {
    let alice = owner();
    let bob = owner();
    let order = store.insert(&new_order(&alice, "A-1")).await.unwrap();
    assert_eq!(store.get(&bob, &order.id).await.unwrap(), None);
    assert!(matches!(
        store.delete(&bob, &order.id, None).await,
        Err(StoreError::NotFound)
    ));
    let mut stolen = order.clone();
    stolen.owner = bob.clone();
    assert!(store.replace(&stolen, &order.etag).await.is_err());
    let empty = ListQuery {
        status: None,
        top: 10,
        continuation: None,
    };
    assert!(store.list(&bob, &empty).await.unwrap().orders.is_empty());
    assert_eq!(
        store.list(&alice, &empty).await.unwrap().orders,
        vec![order.clone()]
    );

    // Owners with characters that are special to the table still get a partition each.
    let odd = format!("{alice}/x#y?z'");
    let odd_order = store.insert(&new_order(&odd, "A-1")).await.unwrap();
    assert_eq!(
        store.list(&alice, &empty).await.unwrap().orders,
        vec![order]
    );
    assert_eq!(
        store.get(&odd, &odd_order.id).await.unwrap(),
        Some(odd_order)
    );

    // A continuation token from one owner's listing is useless to another.
    for i in 0..3 {
        store
            .insert(&new_order(&alice, &format!("B-{i}")))
            .await
            .unwrap();
    }
    let page = store
        .list(
            &alice,
            &ListQuery {
                status: None,
                top: 1,
                continuation: None,
            },
        )
        .await
        .unwrap();
    let token = page.continuation.expect("more pages");
    let theft = store
        .list(
            &bob,
            &ListQuery {
                status: None,
                top: 10,
                continuation: Some(token),
            },
        )
        .await;
    match theft {
        Err(StoreError::BadContinuation) => {}
        Ok(page) => assert!(page.orders.is_empty()),
        Err(other) => panic!("unexpected error {other}"),
    }
}

async fn health_is_ok(store: Arc<dyn OrderStore>) {
    store.health().await.unwrap();
}
