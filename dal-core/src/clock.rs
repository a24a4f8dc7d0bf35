//! Where the store reads the time from, and the UUIDv7 ids it makes from it.
//!
//! Every time the store writes (`created_at`, `started_at`, `heartbeat_at`, ...) comes from its
//! [`Clock`], read once per operation and cut to microseconds, the precision both backends keep.
//! Production uses [`SystemClock`]; tests use [`ManualClock`] to move time without sleeping.

use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::timestamp::context::ContextV7;
use uuid::{Timestamp, Uuid};

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to: for tests, and for replaying history.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock { now: Mutex::new(start) }
    }

    /// Moves the clock to `to` (also backwards).
    pub fn set(&self, to: DateTime<Utc>) {
        *self.lock() = to;
    }

    /// Moves the clock forward by `by` and returns the new time.
    pub fn advance(&self, by: TimeDelta) -> DateTime<Utc> {
        let mut now = self.lock();
        *now += by;
        *now
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // The guarded value is a plain time: a panic elsewhere cannot leave it half-written.
        self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

/// `at` cut to whole microseconds (towards the past), the precision both backends store.
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

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
        Uuid::new_v7(Timestamp::from_unix(&self.0, secs, at.timestamp_subsec_nanos()))
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
    fn manual_clock_moves_only_when_told() {
        let start = DateTime::<Utc>::UNIX_EPOCH;
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        let later = clock.advance(TimeDelta::seconds(90));
        assert_eq!(later, start + TimeDelta::seconds(90));
        assert_eq!(clock.now(), later);
        clock.set(start);
        assert_eq!(clock.now(), start);
    }

    #[test]
    fn times_are_cut_to_microseconds() {
        let at = DateTime::<Utc>::UNIX_EPOCH + TimeDelta::nanoseconds(1_234_567_891);
        assert_eq!(to_micros(at), DateTime::<Utc>::UNIX_EPOCH + TimeDelta::microseconds(1_234_567));
        let before = DateTime::<Utc>::UNIX_EPOCH - TimeDelta::nanoseconds(1);
        assert_eq!(to_micros(before), DateTime::<Utc>::UNIX_EPOCH - TimeDelta::microseconds(1));
    }

    #[test]
    fn ids_of_one_time_increase() {
        let ids = Ids::default();
        let at = DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000);
        let made: Vec<Uuid> = (0..1000).map(|_| ids.at(at)).collect();
        assert!(made.windows(2).all(|w| w[0] < w[1]));
        assert!(made.iter().all(|id| id.get_version_num() == 7));
    }
}
