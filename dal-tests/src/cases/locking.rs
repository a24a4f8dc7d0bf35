//! Lock order: multi-row writes lock in task id order (`complete_many`, a cycle's finished
//! tasks, a retention batch) or skip locked rows (a claim, a sweep), so racing them on
//! overlapping rows in opposite orders never deadlocks (it did within a few rounds before).

use super::support::{Sequence, THREADS, checked_history, on_threads, race, ready_tasks, workflow};
use crate::case;
use crate::suite::{Backend, Case, Fixture, Plans, Setup};
use chrono::{DateTime, TimeDelta};
use dal_core::{
    DalError, FailedTask, Finished, Lease, NewTaskExecution, RetriedTask, TaskExecution,
    TaskExecutionStore, TaskStatus::*,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use uuid::Uuid;

pub const CASES: &[Case] = &[
    case!(batches_completed_in_opposite_orders_never_deadlock),
    case!(racing_claims_completions_and_sweeps_never_deadlock),
];

const ROUNDS: usize = 40;
const BATCH: usize = 48;

/// Enough other tasks that PostgreSQL finds the leased rows by primary key, lease by lease
/// (the plan that locked rows in the leases' order).
const BACKGROUND: usize = 4_000;

/// Finishes `batch` with `complete_many`, or (`cycle`) in a cycle that completes, fails and
/// retries (on the only attempt: fails) a third each, and claims nothing (nothing is Ready).
fn finish(store: &dyn TaskExecutionStore, batch: &[Lease], cycle: bool) -> Finishing {
    if !cycle {
        return store.complete_many(batch).map(|c| (c.completed, c.lost));
    }
    let third = |k: usize| batch.iter().skip(k).step_by(3).copied();
    let error = || "finished by the cycle".to_owned();
    let retry_at = DateTime::UNIX_EPOCH;
    let failed = third(1).map(|lease| FailedTask { lease, error: error() });
    let retried = third(2).map(|lease| RetriedTask { lease, error: error(), retry_at });
    let (completed, failed, retried) = (third(0).collect(), failed.collect(), retried.collect());
    let finished = Finished { completed, failed, retried };
    let cycle = store.finish_and_claim(batch[0].runner_id, &finished, 4)?;
    assert!(cycle.claimed.is_empty() && cycle.retried.is_empty());
    Ok((cycle.completed.into_iter().chain(cycle.failed).collect(), cycle.lost))
}

type Finishing = dal_core::Result<(Vec<TaskExecution>, Vec<Lease>)>;

fn pooled(kind: Backend, pool_size: u32) -> Fixture {
    Fixture::with(kind, Setup { pool_size, ..Setup::default() })
}

fn sorted(ids: impl Iterator<Item = Uuid>) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = ids.collect();
    ids.sort_unstable();
    ids
}

fn batches_completed_in_opposite_orders_never_deadlock(kind: Backend) {
    let f = pooled(kind, 3);
    let background = workflow();
    let news = (0..BACKGROUND).map(|i| NewTaskExecution::new(background, format!("b{i:05}")));
    f.store.create_many(&news.collect::<Vec<_>>()).expect("create_many");
    let tasks = sorted(ready_tasks(f.store(), workflow(), BATCH, 1).iter().map(|t| t.id));
    let runner = Uuid::now_v7();
    // Three processes: generic plans, custom plans, the server's default (PostgreSQL).
    let (custom, generic) = (f.other_store(1, Plans::Custom), f.other_store(1, Plans::Generic));
    let stores = [&*f.store, &*custom, &*generic];
    for round in 0..ROUNDS {
        // Put the batch back in the queue (the only Ready tasks) and claim it, by id.
        if round > 0 {
            for id in &tasks {
                f.store.reset_retry_state(*id).expect("reset_retry_state");
            }
        }
        f.clock.advance(TimeDelta::milliseconds(1));
        let claimed = f.store.claim_ready(runner, BATCH as u32).expect("claim_ready");
        let leases: Vec<Lease> = claimed.iter().map(|c| c.lease).collect();
        assert_eq!(leases.iter().map(|l| l.task_id).collect::<Vec<_>>(), tasks);
        // All ascending, two thirds descending, every third one (in a cycle): overlapping.
        let backwards: Vec<Lease> = leases[BATCH / 3..].iter().rev().copied().collect();
        let every_third: Vec<Lease> = leases.iter().step_by(3).copied().collect();
        let batches = [leases, backwards, every_third];
        let results = race(3, |i| finish(stores[i], &batches[i], i == 2));
        // Each task is finished by exactly one of the batches; the others report it lost.
        let mut finished = HashSet::new();
        for (batch, result) in batches.iter().zip(results) {
            let (rows, lost) = result.unwrap_or_else(|e| panic!("{kind}: round {round}: {e:?}"));
            for row in &rows {
                assert!(matches!(row.status, Completed | Failed));
                assert!(finished.insert(row.id), "{} finished twice", row.id);
            }
            let accounted = rows.iter().map(|t| t.id).chain(lost.iter().map(|l| l.task_id));
            let asked = sorted(batch.iter().map(|l| l.task_id));
            assert_eq!(sorted(accounted), asked, "{kind}: round {round}");
        }
        assert_eq!(finished.len(), BATCH, "{kind}: round {round}");
    }
    for id in &tasks {
        let row = f.store.get(*id).expect("get");
        assert!(matches!(row.status, Completed | Failed));
        checked_history(&f, &row);
    }
}

const RACED: usize = 400;
const RACES: usize = 6;
const SWEEPS: usize = 60;

/// Runners claim 1 to 64 tasks and complete them (one by one, or as a batch in id order or in
/// reverse), alone in the first round (no lease lost, each task claimed once), then beside a
/// sweeper resetting every claim: only lost claims fail; each task claimed once per reset more.
fn racing_claims_completions_and_sweeps_never_deadlock(kind: Backend) {
    let f = pooled(kind, THREADS as u32 + 1);
    for round in 0..RACES {
        let created = ready_tasks(f.store(), workflow(), RACED, 1);
        let (sweeps, sweeping) = (if round == 0 { 0 } else { SWEEPS }, AtomicBool::new(true));
        // Every claim is stale to this sweeper.
        let far_future = f.now() + TimeDelta::days(1);
        let sweeper = || {
            let mut reset = 0;
            for _ in 0..sweeps {
                let recovery = f.store.recover_stale_claims(far_future, i32::MAX);
                let recovery = recovery.expect("recover_stale_claims");
                assert!(recovery.abandoned.is_empty());
                reset += recovery.reset.len();
                thread::yield_now();
            }
            sweeping.store(false, Ordering::Release);
            reset
        };
        let runner = |i: usize, store: &dyn TaskExecutionStore| {
            let (runner, mut sizes) = (Uuid::now_v7(), Sequence::new(i as u64 + 1));
            let (mut claimed, mut completed) = (Vec::new(), 0);
            loop {
                // Read before the claim: an empty claim after the last sweep means none is left.
                let swept_out = !sweeping.load(Ordering::Acquire);
                let limit = sizes.next_in(1, 64);
                let got = store.claim_ready(runner, limit).expect("claim_ready");
                let mine = got.iter().all(|c| c.task.claimed_by == Some(runner));
                assert!(mine && got.len() <= limit as usize, "limit {limit}: {got:?}");
                if got.is_empty() && swept_out {
                    return (claimed, completed);
                }
                let mut leases: Vec<Lease> = got.iter().map(|c| c.lease).collect();
                claimed.extend(leases.iter().map(|l| l.task_id));
                let lost = if i.is_multiple_of(3) {
                    let results = leases.iter().map(|lease| store.complete(lease));
                    let (done, lost): (Vec<_>, Vec<_>) = results.partition(Result::is_ok);
                    for err in &lost {
                        assert!(matches!(err, Err(DalError::ClaimLost { .. })), "{err:?}");
                    }
                    completed += done.len();
                    lost.len()
                } else {
                    if i % 3 == 2 {
                        leases.reverse();
                    }
                    let done = store.complete_many(&leases).expect("complete_many");
                    completed += done.completed.len();
                    done.lost.len()
                };
                assert!(sweeps > 0 || lost == 0, "{kind}: a lease lost without a sweeper");
                thread::yield_now();
            }
        };
        let (reset, per_thread) = thread::scope(|scope| {
            let sweeper = scope.spawn(sweeper);
            let per_thread = on_threads(f.store(), runner);
            (sweeper.join().expect("sweeper panicked"), per_thread)
        });
        let mut claims: HashMap<Uuid, i32> = HashMap::new();
        let mut completed = 0;
        for (ids, done) in per_thread {
            ids.into_iter().for_each(|id| *claims.entry(id).or_default() += 1);
            completed += done;
        }
        assert_eq!((completed, claims.len()), (RACED, RACED), "{kind}: round {round}");
        let mut recovered = 0;
        for task in &created {
            let row = f.store.get(task.id).expect("get");
            let times = 1 + row.recovery_attempts;
            let got = (row.status, row.claimed_by, row.claim_count, claims[&row.id]);
            assert_eq!(got, (Completed, None, times, times), "{kind}: {row:?}");
            assert!(sweeps > 0 || times == 1, "{kind}: claimed twice without a sweeper");
            checked_history(&f, &row);
            recovered += row.recovery_attempts as usize;
        }
        assert_eq!(recovered, reset, "{kind}: every reset is counted on its task");
    }
}
