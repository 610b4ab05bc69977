//! Tokens already verified, so a client that sends the same token on every call pays for the
//! signature check once.
//!
//! Entries are keyed by the SHA-256 of the token (the token itself is never stored) and hold the
//! identity it carries. An entry is used only before the token's `exp` and only while the key
//! set it was verified against is still current: a key rotation invalidates it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::auth::jwt::Identity;

pub type TokenDigest = [u8; 32];

pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

struct Entry {
    identity: Identity,
    /// Generation of the key set the signature was checked with.
    generation: u64,
}

pub struct VerifiedTokens {
    capacity: usize,
    entries: Mutex<HashMap<TokenDigest, Entry>>,
}

impl VerifiedTokens {
    /// Holds at most `capacity` tokens; 0 turns the cache off.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The identity of a token verified earlier, if it has not expired and its key set is still
    /// the current one (`generation`).
    pub fn get(&self, digest: &TokenDigest, now: u64, generation: u64) -> Option<Identity> {
        if self.capacity == 0 {
            return None;
        }
        let mut entries = self.lock();
        let entry = entries.get(digest)?;
        if entry.generation == generation && now < entry.identity.expires_at {
            return Some(entry.identity.clone());
        }
        entries.remove(digest);
        None
    }

    pub fn insert(&self, digest: TokenDigest, identity: Identity, generation: u64, now: u64) {
        if self.capacity == 0 || identity.expires_at <= now {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, entry| now < entry.identity.expires_at);
            // Still full of live tokens: start over rather than track recency. The cost is one
            // signature check per token on its next use.
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            digest,
            Entry {
                identity,
                generation,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A panic while holding the lock leaves the map consistent (every operation is a single
    /// map call), so a poisoned lock is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenDigest, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(owner: &str, expires_at: u64) -> Identity {
        Identity {
            owner: owner.into(),
            grants: Default::default(),
            expires_at,
        }
    }

    #[test]
    fn entries_end_at_exp_and_at_key_rotation() {
        let cache = VerifiedTokens::new(10);
        let d = digest("token");
        cache.insert(d, identity("alice", 100), 1, 50);
        assert_eq!(cache.get(&d, 99, 1).unwrap().owner.as_ref(), "alice");
        assert!(cache.get(&d, 100, 1).is_none(), "expired");
        cache.insert(d, identity("alice", 100), 1, 50);
        assert!(cache.get(&d, 60, 2).is_none(), "key set changed");
        assert!(cache.is_empty());
    }

    #[test]
    fn size_is_bounded() {
        let cache = VerifiedTokens::new(3);
        for i in 0..10 {
            cache.insert(digest(&i.to_string()), identity("a", 100), 1, 0);
            assert!(cache.len() <= 3);
        }
        cache.insert(digest("expired"), identity("a", 5), 1, 10);
        assert!(cache.get(&digest("expired"), 10, 1).is_none());
    }
}
