//! Where a claim starts reading the queue.
//!
//! The claim reads the `Ready` tasks' index in queue order (`due_at`, then id) and stops at its
//! limit. On PostgreSQL the entries of the tasks claimed a moment ago stay in that index, dead,
//! at its front, until vacuum removes them (a plain index scan marks them dead as it passes, but
//! still reads their pages); a claim that always started at the front would read more of them
//! the more tasks were claimed since the last vacuum. So each store remembers the queue
//! position its last full claim reached, its *claim floor*, and the next claim starts there.
//!
//! Nothing due is skipped that way, because a task enters the queue at the time of the write
//! that makes it `Ready` (or later, at its retry time), which is never before a claim that
//! already ran on the same clock. The floor holds a time only, so tasks of that same
//! microsecond are read again. What can still be behind the floor: a task made ready by another
//! process whose clock runs behind this one's, or a row another transaction held locked when a
//! claim passed it. For those, a claim starts from the front at least once every
//! [`FULL_SCAN_EVERY`], after every claim that came back short (the queue above the floor is
//! empty), and whenever the store's clock went backwards.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::validate;

/// How often a claim reads the queue from its front, whatever the floor.
pub const FULL_SCAN_EVERY: Duration = Duration::from_secs(1);

/// The floors of one store's scans.
#[derive(Debug, Default)]
pub(super) struct Floors {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The latest time the store's clock gave.
    latest: Option<DateTime<Utc>>,
    claim: Floor,
}

/// A floor: a time scans start at, and when a scan last started at the front.
#[derive(Debug, Default)]
struct Floor {
    at: Option<DateTime<Utc>>,
    full_scan: Option<Instant>,
}

impl Floor {
    /// Where a scan at `now` starts, given how often it must start at the front.
    fn start(&mut self, now: DateTime<Utc>, every: Duration) -> Option<DateTime<Utc>> {
        let fresh = self.full_scan.is_some_and(|at| at.elapsed() < every);
        match self.at {
            Some(at) if fresh && at <= now => Some(at),
            _ => {
                self.full_scan = Some(Instant::now());
                None
            }
        }
    }

    /// The floor rises to `at` (never falls).
    fn raise(&mut self, at: DateTime<Utc>) {
        self.at = Some(self.at.map_or(at, |floor| floor.max(at)));
    }
}

impl Floors {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is a hint: whatever a panic left in it is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes the time of an operation; a clock that went backwards drops the floors.
    pub(super) fn saw(&self, now: DateTime<Utc>) {
        let mut state = self.state();
        if state.latest.is_some_and(|latest| now < latest) {
            state.claim.at = None;
        }
        state.latest = Some(now);
    }

    /// The queue position a claim at `now` starts at.
    pub(super) fn claim_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.state().claim.start(now, FULL_SCAN_EVERY).unwrap_or_else(validate::earliest_time)
    }

    /// Records what a claim of `limit` returned: the queue positions of the tasks it claimed.
    pub(super) fn claimed(&self, limit: u32, positions: &[DateTime<Utc>]) {
        let mut state = self.state();
        if positions.len() < limit as usize {
            state.claim.at = None;
        } else if let Some(&last) = positions.iter().max() {
            state.claim.raise(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    #[test]
    fn a_full_claim_raises_the_floor_and_a_short_one_drops_it() {
        let floors = Floors::default();
        assert_eq!(floors.claim_start(at(10)), validate::earliest_time());
        floors.claimed(2, &[at(3), at(5)]);
        assert_eq!(floors.claim_start(at(10)), at(5));
        // Concurrent claims: the floor only rises.
        floors.claimed(2, &[at(4), at(4)]);
        assert_eq!(floors.claim_start(at(10)), at(5));
        floors.claimed(2, &[at(6)]);
        assert_eq!(floors.claim_start(at(10)), validate::earliest_time());
    }

    #[test]
    fn a_clock_that_went_backwards_drops_the_floors() {
        let floors = Floors::default();
        floors.saw(at(10));
        floors.claim_start(at(10));
        floors.claimed(1, &[at(9)]);
        assert_eq!(floors.claim_start(at(10)), at(9));
        // A floor ahead of the claim's time is not used.
        assert_eq!(floors.claim_start(at(8)), validate::earliest_time());
        floors.claimed(1, &[at(9)]);
        floors.saw(at(7));
        assert_eq!(floors.claim_start(at(12)), validate::earliest_time());
    }
}
