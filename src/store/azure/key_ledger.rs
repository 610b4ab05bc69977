//! How many idempotency keys an owner has claimed lately, in Table Storage, where counting the
//! owner's key rows would mean reading them all.
//!
//! One entity per owner (row [`ROW`] in the owner's partition, apart from orders `o_...` and
//! keys `k_...`) holds a count per clock hour for the last [`HOURS`] hours. A key claimed in
//! hour `h` lives 24 hours from its claim, so until the end of hour `h + 24` at the latest:
//! counting 25 hours counts every live key, and a key may go on counting for up to an hour after
//! it was forgotten. Claims update the entity with its ETag, so concurrent claims never lose a
//! count.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::table::Entity;
use crate::store::StoreError;

/// The ledger's row key.
pub const ROW: &str = "c_idempotency";

/// Hours counted: the retention period, plus the hour a key was claimed in.
pub const HOURS: i64 = 25;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyLedger {
    /// (hour since the epoch, keys claimed in it), oldest first.
    hours: Vec<(i64, u64)>,
}

fn hour_of(at: OffsetDateTime) -> i64 {
    at.unix_timestamp().div_euclid(3600)
}

impl KeyLedger {
    pub fn from_entity(entity: &Entity) -> Result<Self, StoreError> {
        let hours = entity
            .string("Hours")
            .and_then(|text| serde_json::from_str(text).ok())
            .ok_or_else(|| StoreError::BadResponse("idempotency ledger: unreadable".to_owned()))?;
        Ok(Self { hours })
    }

    pub fn properties(&self) -> Map<String, Value> {
        let mut properties = Map::new();
        properties.insert(
            "Hours".into(),
            Value::from(serde_json::to_string(&self.hours).unwrap_or_default()),
        );
        properties
    }

    /// Forgets hours whose keys have all expired by `now`.
    pub fn prune(&mut self, now: OffsetDateTime) {
        let current = hour_of(now);
        self.hours.retain(|(hour, _)| current - hour < HOURS);
    }

    /// Keys counted (call [`KeyLedger::prune`] first).
    pub fn count(&self) -> u64 {
        self.hours.iter().map(|(_, n)| n).sum()
    }

    /// Counts one more key claimed at `now`.
    pub fn add(&mut self, now: OffsetDateTime) {
        let hour = hour_of(now);
        match self.hours.binary_search_by_key(&hour, |(h, _)| *h) {
            Ok(at) => self.hours[at].1 += 1,
            Err(at) => self.hours.insert(at, (hour, 1)),
        }
    }

    /// How long until the oldest counted hour is forgotten.
    pub fn retry_after(&self, now: OffsetDateTime) -> time::Duration {
        let oldest = self.hours.first().map_or(hour_of(now), |(hour, _)| *hour);
        let forgotten = (oldest + HOURS) * 3600;
        time::Duration::seconds(forgotten - now.unix_timestamp()).max(time::Duration::SECOND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn counts_the_last_25_clock_hours() {
        let start = datetime!(2026-11-24 10:59:00 UTC);
        let mut ledger = KeyLedger::default();
        ledger.add(start);
        ledger.add(start + time::Duration::minutes(2));
        ledger.add(start + time::Duration::minutes(3));
        assert_eq!(
            ledger.hours,
            vec![(hour_of(start), 1), (hour_of(start) + 1, 2)]
        );
        // 24 hours after the first claim, it still counts (it may still be live).
        let day = start + time::Duration::hours(24);
        ledger.prune(day);
        assert_eq!(ledger.count(), 3);
        // The 10:00 hour goes at 11:00 the next day; the 11:00 hour an hour later.
        assert_eq!(ledger.retry_after(day), time::Duration::minutes(1));
        ledger.prune(day + time::Duration::minutes(1));
        assert_eq!(ledger.count(), 2);
        ledger.prune(day + time::Duration::minutes(61));
        assert_eq!(ledger.count(), 0);
    }

    #[test]
    fn round_trips_through_its_entity() {
        let mut ledger = KeyLedger::default();
        ledger.add(datetime!(2026-11-24 10:00:00 UTC));
        let entity = Entity {
            properties: ledger.properties(),
            etag: "W/\"1\"".to_owned(),
        };
        assert_eq!(KeyLedger::from_entity(&entity).unwrap(), ledger);
    }
}
