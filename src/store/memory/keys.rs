//! Idempotency keys in memory: found in O(1) by owner and key, forgotten in claim order without
//! scanning, and at most `limit` live keys per owner.
//!
//! Each claim is queued twice: in its owner's queue (which makes the owner's oldest key, and so
//! the `Retry-After` of a refused claim, a look at the front) and in one queue for all owners
//! (which forgets the keys of owners who never come back). Both are in claim order, so expiring
//! pops from the front and stops at the first live entry; entries whose record was released or
//! claimed again are skipped when they reach the front.

use std::collections::{HashMap, VecDeque};

use time::OffsetDateTime;

use crate::store::{Claim, IDEMPOTENCY_CLAIM_TIMEOUT, IDEMPOTENCY_RETENTION, StoredResponse};

#[derive(Clone)]
enum KeyState {
    InProgress,
    Completed(StoredResponse),
}

struct KeyRecord {
    fingerprint: String,
    state: KeyState,
    /// When the key was (last) claimed: it lives for the retention period from here.
    claimed_at: OffsetDateTime,
    /// When its state last changed: an in-progress claim older than the claim timeout is
    /// abandoned.
    at: OffsetDateTime,
}

#[derive(Default)]
struct OwnerKeys {
    records: HashMap<String, KeyRecord>,
    /// (claimed_at, key), in claim order.
    claims: VecDeque<(OffsetDateTime, String)>,
}

impl OwnerKeys {
    /// Forgets expired keys and skips stale queue entries, so that the front is the oldest
    /// live key.
    fn expire(&mut self, now: OffsetDateTime) {
        while let Some((claimed_at, key)) = self.claims.front() {
            let live = self
                .records
                .get(key)
                .is_some_and(|r| r.claimed_at == *claimed_at);
            if live && now - *claimed_at < IDEMPOTENCY_RETENTION {
                break;
            }
            if live {
                self.records.remove(key);
            }
            self.claims.pop_front();
        }
    }
}

pub(super) struct KeyTable {
    owners: HashMap<String, OwnerKeys>,
    /// (claimed_at, owner), in claim order, over all owners.
    claims: VecDeque<(OffsetDateTime, String)>,
    limit: usize,
}

impl KeyTable {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            owners: HashMap::new(),
            claims: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    /// Forgets what expired, for every owner, from the front of the common queue.
    fn expire(&mut self, now: OffsetDateTime) {
        while let Some((claimed_at, _)) = self.claims.front() {
            if now - *claimed_at < IDEMPOTENCY_RETENTION {
                break;
            }
            let Some((_, owner)) = self.claims.pop_front() else {
                break;
            };
            if let Some(keys) = self.owners.get_mut(&owner) {
                keys.expire(now);
                if keys.records.is_empty() {
                    self.owners.remove(&owner);
                }
            }
        }
    }

    pub(super) fn claim(
        &mut self,
        owner: &str,
        key: &str,
        fingerprint: &str,
        now: OffsetDateTime,
    ) -> Claim {
        self.expire(now);
        let limit = self.limit;
        let keys = self.owners.entry(owner.to_owned()).or_default();
        keys.expire(now);
        if let Some(record) = keys.records.get_mut(key) {
            let abandoned = matches!(record.state, KeyState::InProgress)
                && now - record.at >= IDEMPOTENCY_CLAIM_TIMEOUT;
            if !abandoned {
                return match &record.state {
                    KeyState::InProgress => Claim::InProgress {
                        fingerprint: record.fingerprint.clone(),
                    },
                    KeyState::Completed(response) => Claim::Completed {
                        fingerprint: record.fingerprint.clone(),
                        response: response.clone(),
                    },
                };
            }
            // Taken over: the same key, so the owner holds no more keys than before.
            *record = KeyRecord {
                fingerprint: fingerprint.to_owned(),
                state: KeyState::InProgress,
                claimed_at: now,
                at: now,
            };
        } else {
            if keys.records.len() >= limit {
                let oldest = keys.claims.front().map_or(now, |(at, _)| *at);
                return Claim::LimitReached {
                    limit,
                    retry_after: (oldest + IDEMPOTENCY_RETENTION - now).max(time::Duration::SECOND),
                };
            }
            keys.records.insert(
                key.to_owned(),
                KeyRecord {
                    fingerprint: fingerprint.to_owned(),
                    state: KeyState::InProgress,
                    claimed_at: now,
                    at: now,
                },
            );
        }
        keys.claims.push_back((now, key.to_owned()));
        self.claims.push_back((now, owner.to_owned()));
        Claim::Claimed
    }

    pub(super) fn complete(
        &mut self,
        owner: &str,
        key: &str,
        fingerprint: &str,
        response: &StoredResponse,
        now: OffsetDateTime,
    ) {
        // A claim that expired or was released meanwhile has nothing to complete: the order
        // exists, and a retry will be a new request.
        if let Some(record) = self
            .owners
            .get_mut(owner)
            .and_then(|keys| keys.records.get_mut(key))
        {
            record.fingerprint = fingerprint.to_owned();
            record.state = KeyState::Completed(response.clone());
            record.at = now;
        }
    }

    pub(super) fn release(&mut self, owner: &str, key: &str) {
        if let Some(keys) = self.owners.get_mut(owner) {
            keys.records.remove(key);
            if keys.records.is_empty() {
                self.owners.remove(owner);
            }
        }
    }

    /// Keys held now (expired ones not yet forgotten included), for tests of the bound.
    pub(super) fn held(&self, owner: &str) -> usize {
        self.owners.get(owner).map_or(0, |keys| keys.records.len())
    }
}
