//! Where a claim, and a retention pass, start reading their index.
//!
//! The claim reads the `Ready` tasks' index in queue order (`due_at`, then id) and stops at its
//! limit; a retention pass reads the finished tasks' index in the order they finished. On
//! PostgreSQL the entries of the tasks claimed (or deleted) a moment ago stay in those indexes,
//! dead, at their front, until vacuum removes them (a plain index scan marks them dead as it
//! passes, but still reads their pages); a scan that always started at the front would read
//! more of them the more tasks were processed since the last vacuum. So each store remembers
//! how far its scans got, its *floors*, and the next scan starts there.
//!
//! Nothing is skipped that way, because a task enters the queue at the time of the write that
//! makes it `Ready` (or later, at its retry time), and finishes at the time of the write that
//! finishes it, which is never before a scan that already ran on the same clock. A floor holds
//! a time only, so tasks of that same microsecond are read again. What can still be behind a
//! floor: a task written by another process whose clock runs behind this one's, or a row
//! another transaction held locked when a claim passed it. For those, a claim starts from the
//! front at least once every [`FULL_SCAN_EVERY`] and after every claim that came back short (the
//! queue above the floor is empty), a retention pass at least once every
//! [`FULL_PASS_EVERY`], and both whenever the store's clock went backwards.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::PruneCursor;
use crate::validate;

/// How often a claim reads the queue from its front, whatever the floor.
pub const FULL_SCAN_EVERY: Duration = Duration::from_secs(1);

/// How often a retention pass reads the finished tasks from the first, whatever the floor.
pub const FULL_PASS_EVERY: Duration = Duration::from_secs(60);

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
    prune: Floor,
    /// The cursor a retention pass that has removed everything it read from the prune floor
    /// on hands to its next batch; `None` once a batch kept a task.
    clean_pass: Option<PruneCursor>,
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
            state.prune.at = None;
            state.clean_pass = None;
        }
        state.latest = Some(now);
    }

    /// The queue position a claim at `now` starts at.
    pub(super) fn claim_start(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.state()
            .claim
            .start(now, FULL_SCAN_EVERY)
            .unwrap_or_else(validate::earliest_time)
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

    /// Where a retention batch asked to go on after `after` (`None`: a new pass) starts.
    pub(super) fn prune_start(&self, after: Option<PruneCursor>) -> Option<PruneCursor> {
        let mut state = self.state();
        if after.is_some() {
            if state.clean_pass != after {
                state.clean_pass = None;
            }
            return after;
        }
        let now = state.latest.unwrap_or_else(validate::earliest_time);
        let from = state
            .prune
            .start(now, FULL_PASS_EVERY)
            .map(|at| PruneCursor {
                completed_at: at,
                task_id: Uuid::nil(),
            });
        // A new pass is clean until a batch keeps a task.
        state.clean_pass = from.or(Some(PruneCursor {
            completed_at: validate::earliest_time(),
            task_id: Uuid::nil(),
        }));
        from
    }

    /// Records a retention batch that started after `started` (what [`Floors::prune_start`]
    /// returned, or the front): `cleared` is the last task it read before the first one it
    /// kept, `kept_any` whether it kept one, `next` where the pass goes on.
    pub(super) fn pruned(
        &self,
        started: Option<PruneCursor>,
        cleared: Option<PruneCursor>,
        kept_any: bool,
        next: Option<PruneCursor>,
    ) {
        let mut state = self.state();
        let started = started.unwrap_or(PruneCursor {
            completed_at: validate::earliest_time(),
            task_id: Uuid::nil(),
        });
        if state.clean_pass != Some(started) {
            return;
        }
        if let Some(cleared) = cleared {
            state.prune.raise(cleared.completed_at);
        }
        state.clean_pass = if kept_any { None } else { next };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap_or_default()
    }

    fn cursor(secs: i64, id: u128) -> PruneCursor {
        PruneCursor {
            completed_at: at(secs),
            task_id: Uuid::from_u128(id),
        }
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
        let started = floors.prune_start(None);
        floors.pruned(started, Some(cursor(4, 1)), false, None);
        floors.saw(at(7));
        assert_eq!(floors.claim_start(at(12)), validate::earliest_time());
        assert_eq!(floors.prune_start(None), None);
    }

    #[test]
    fn a_pass_moves_the_prune_floor_only_over_what_it_removed() {
        let floors = Floors::default();
        floors.saw(at(100));
        // First pass: from the front. Its first batch removes all it read; the second keeps
        // something after clearing up to second 7.
        let first = floors.prune_start(None);
        assert_eq!(first, None);
        floors.pruned(first, Some(cursor(5, 9)), false, Some(cursor(5, 9)));
        let second = floors.prune_start(Some(cursor(5, 9)));
        floors.pruned(second, Some(cursor(7, 2)), true, Some(cursor(8, 1)));
        // A later batch of the same pass does not move the floor past what was kept.
        let third = floors.prune_start(Some(cursor(8, 1)));
        floors.pruned(third, Some(cursor(9, 1)), false, None);
        // The next pass starts at the floor's time, reading its microsecond again.
        assert_eq!(floors.prune_start(None), Some(cursor(7, 0)));
    }
}
