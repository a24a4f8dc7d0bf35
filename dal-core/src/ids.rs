//! UUIDv7 ids made from the store's clock.
//!
//! **For backend authors.** Users of a store need none of this module: see [`crate::prelude`].

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use uuid::timestamp::context::ContextV7;
use uuid::{Timestamp, Uuid};

/// Makes UUIDv7 ids for given times. Ids made by one generator increase strictly, also within
/// a millisecond (a counter fills the sub-millisecond bits).
#[derive(Debug)]
pub struct Ids(Mutex<ContextV7>);

impl Ids {
    /// A new generator.
    pub fn new() -> Self {
        Ids(Mutex::new(ContextV7::new()))
    }

    /// A UUIDv7 for time `at` (times before 1970 count as 1970).
    pub fn at(&self, at: DateTime<Utc>) -> Uuid {
        let secs = u64::try_from(at.timestamp()).unwrap_or(0);
        Uuid::new_v7(Timestamp::from_unix(
            &self.0,
            secs,
            at.timestamp_subsec_nanos(),
        ))
    }
}

impl Default for Ids {
    fn default() -> Self {
        Ids::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_one_time_increase() {
        let ids = Ids::new();
        let at = DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000);
        let made: Vec<Uuid> = (0..1000).map(|_| ids.at(at)).collect();
        assert!(made.windows(2).all(|w| w[0] < w[1]));
        assert!(made.iter().all(|id| id.get_version_num() == 7));
    }
}
