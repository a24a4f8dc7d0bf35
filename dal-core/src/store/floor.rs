//! Where a claim starts reading the queue.
//!
//! The claim reads the `Ready` tasks' index in queue order (`due_at`, then id) and stops at its
//! limit. On PostgreSQL the entries of the tasks claimed a moment ago stay in that index, dead,
//! at its front, until vacuum removes them (a plain index scan marks them dead as it passes, but
//! still reads their pages); a claim that always started at the front would read more of them
//! the more tasks were claimed since the last vacuum. So each store remembers the queue position
//! its last full claim reached, and the next claim starts there.
//!
//! Nothing due is skipped that way, because a task enters the queue at the time of the write
//! that makes it `Ready` (or later, at its retry time), which is never before a claim that
//! already ran on the same clock. What can still be behind the floor: a task made ready by
//! another process whose clock runs behind this one's, or a row another transaction held
//! locked when a claim passed it. For those, a claim starts from the front again at least once
//! every [`FULL_SCAN_EVERY`], after every claim that came back short (the queue above the
//! floor is empty), and whenever the store's clock went backwards.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::validate;

/// How often a claim reads the queue from its front, whatever the floor.
pub const FULL_SCAN_EVERY: Duration = Duration::from_secs(1);

/// The floor of one store's claims.
#[derive(Debug, Default)]
pub(super) struct ClaimFloor {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The queue position the store's full claims reached; `None`: start at the front.
    floor: Option<DateTime<Utc>>,
    /// When a claim last started at the front.
    full_scan: Option<Instant>,
    /// The latest time the store's clock gave.
    latest: Option<DateTime<Utc>>,
}

impl ClaimFloor {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a hint: whatever a panic left in it is still safe to use.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes the time of an operation; a clock that went backwards drops the floor.
    pub(super) fn saw(&self, now: DateTime<Utc>) {
        let mut state = self.state();
        if state.latest.is_some_and(|latest| now < latest) {
            state.floor = None;
        }
        state.latest = Some(now);
    }

    /// The queue position a claim at `now` starts at.
    pub(super) fn start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut state = self.state();
        let fresh = state
            .full_scan
            .is_some_and(|at| at.elapsed() < FULL_SCAN_EVERY);
        match state.floor {
            Some(floor) if fresh && floor <= now => floor,
            _ => {
                state.full_scan = Some(Instant::now());
                validate::earliest_time()
            }
        }
    }

    /// Records what a claim of `limit` returned: the queue positions of the tasks it claimed.
    pub(super) fn claimed(&self, limit: u32, positions: &[DateTime<Utc>]) {
        let mut state = self.state();
        if positions.len() < limit as usize {
            state.floor = None;
        } else if let Some(&last) = positions.iter().max() {
            state.floor = Some(state.floor.map_or(last, |floor| floor.max(last)));
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
        let floor = ClaimFloor::default();
        assert_eq!(floor.start(at(10)), validate::earliest_time());
        floor.claimed(2, &[at(3), at(5)]);
        assert_eq!(floor.start(at(10)), at(5));
        // Concurrent claims: the floor only rises.
        floor.claimed(2, &[at(4), at(4)]);
        assert_eq!(floor.start(at(10)), at(5));
        floor.claimed(2, &[at(6)]);
        assert_eq!(floor.start(at(10)), validate::earliest_time());
    }

    #[test]
    fn a_clock_that_went_backwards_drops_the_floor() {
        let floor = ClaimFloor::default();
        floor.saw(at(10));
        floor.start(at(10));
        floor.claimed(1, &[at(9)]);
        assert_eq!(floor.start(at(10)), at(9));
        // A floor ahead of the claim's time is not used.
        assert_eq!(floor.start(at(8)), validate::earliest_time());
        floor.claimed(1, &[at(9)]);
        floor.saw(at(7));
        assert_eq!(floor.start(at(12)), validate::earliest_time());
    }
}
