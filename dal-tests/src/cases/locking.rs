//! Lock order: concurrent multi-row writes never deadlock each other, and transient conflicts
//! are retried by the store.
//!
//! Every multi-row write that waits for row locks takes them in task id order (`complete_many`,
//! a runner cycle's finished tasks, a retention batch), or skips rows another transaction holds (a claim, a sweep). These cases
//! race such writes on overlapping rows, in opposite orders, many times over: before the lock
//! order was fixed, the first one stopped with PostgreSQL's `deadlock detected` within a few
//! rounds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use chrono::TimeDelta;
use dal_core::{
    FailedTask, Finished, Lease, NewTaskExecution, RetriedTask, TaskExecution, TaskExecutionStore,
    TaskStatus,
};
use uuid::Uuid;

use super::support::{THREADS, on_threads};
use super::support::{checked_history, ready_tasks, workflow};
use crate::case;
use crate::suite::Case;
use crate::suite::{Backend, Plans};
use crate::suite::{Fixture, Setup};

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(batches_completed_in_opposite_orders_never_deadlock),
    case!(racing_claims_completions_and_sweeps_never_deadlock),
];

/// Rounds of the opposite-order race.
const ROUNDS: usize = 40;

/// Tasks each round completes from two threads at once.
const BATCH: usize = 48;

/// Enough other tasks (not started, so never claimed) that PostgreSQL finds the leased rows by
/// primary key, one lease after another: the plan that locked rows in the order of the leases
/// given, before the lock order was fixed.
const BACKGROUND: usize = 4_000;

fn batches_completed_in_opposite_orders_never_deadlock(kind: Backend) {
    let f = Fixture::with(
        kind,
        Setup {
            pool_size: 3,
            ..Setup::default()
        },
    );
    let background = workflow();
    let news: Vec<NewTaskExecution> = (0..BACKGROUND)
        .map(|i| NewTaskExecution::new(background, format!("b{i:05}")))
        .collect();
    f.store.create_many(&news).expect("create_many");
    let wf = workflow();
    let mut tasks: Vec<Uuid> = ready_tasks(f.store(), wf, BATCH, 1)
        .iter()
        .map(|t| t.id)
        .collect();
    tasks.sort_unstable();
    let runner = Uuid::now_v7();
    let barrier = Arc::new(Barrier::new(3));
    // Three stores, as three processes: on PostgreSQL one keeps generic plans, one plans each
    // statement anew, one is left to the server's default. A lock order that depends on the
    // plan differs between them.
    let stores = [
        Arc::clone(&f.store),
        f.other_store(1, Plans::Custom),
        f.other_store(1, Plans::Generic),
    ];
    for round in 0..ROUNDS {
        // Put the batch back in the queue (the only Ready tasks) and claim it.
        if round > 0 {
            for id in &tasks {
                f.store.reset_retry_state(*id).expect("reset_retry_state");
            }
        }
        f.clock.advance(TimeDelta::milliseconds(1));
        let leases: Vec<Lease> = claim_these(&*f.store, runner, &tasks);
        // Three overlapping batches of the runner's leases, of different sizes and orders: all
        // of them ascending, two thirds descending, every third one. Each task is in two or
        // three of them.
        let all = leases.clone();
        let mut backwards = leases[BATCH / 3..].to_vec();
        backwards.reverse();
        let every_third: Vec<Lease> = leases.iter().step_by(3).copied().collect();
        let batches = [all, backwards, every_third];
        // The third batch is a runner cycle: it completes a third of its tasks, fails a third,
        // retries a third and claims (nothing is Ready), locking the finished tasks together.
        let results: Vec<_> = batches
            .iter()
            .cloned()
            .zip(&stores)
            .enumerate()
            .map(|(i, (batch, store))| {
                let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    if i < 2 {
                        return store.complete_many(&batch).map(|c| (c.completed, c.lost));
                    }
                    // A third each: completed, failed, retried (on their only attempt:
                    // failed by the cycle too).
                    let third = |k: usize| batch.iter().skip(k).step_by(3).copied();
                    let finished = Finished {
                        completed: third(0).collect(),
                        failed: third(1)
                            .map(|lease| FailedTask {
                                lease,
                                error: "failed by the cycle".into(),
                            })
                            .collect(),
                        retried: third(2)
                            .map(|lease| RetriedTask {
                                lease,
                                error: "retried by the cycle".into(),
                                retry_at: chrono::DateTime::UNIX_EPOCH,
                            })
                            .collect(),
                    };
                    store.finish_and_claim(runner, &finished, 4).map(|c| {
                        assert!(c.claimed.is_empty() && c.retried.is_empty());
                        (c.completed.into_iter().chain(c.failed).collect(), c.lost)
                    })
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().expect("completing thread panicked"))
            .collect();
        let mut completed = HashSet::new();
        for (batch, result) in batches.iter().zip(results) {
            let (finished, lost) = result.unwrap_or_else(|err| {
                panic!("{kind}: round {round}: complete_many or the cycle failed: {err:?}")
            });
            // Each task is finished by exactly one of the batches; the other reports its
            // lease lost.
            for task in &finished {
                assert!(matches!(
                    task.status,
                    TaskStatus::Completed | TaskStatus::Failed
                ));
                assert!(completed.insert(task.id), "{} finished twice", task.id);
            }
            let mut accounted: Vec<Uuid> = finished
                .iter()
                .map(|t| t.id)
                .chain(lost.iter().map(|l| l.task_id))
                .collect();
            accounted.sort_unstable();
            let mut asked: Vec<Uuid> = batch.iter().map(|l| l.task_id).collect();
            asked.sort_unstable();
            assert_eq!(accounted, asked, "{kind}: round {round}");
        }
        assert_eq!(completed.len(), BATCH, "{kind}: round {round}");
    }
    for id in &tasks {
        let row = f.store.get(*id).expect("get");
        assert!(matches!(
            row.status,
            TaskStatus::Completed | TaskStatus::Failed
        ));
        checked_history(&f, &row);
    }
}

/// Claims exactly `tasks` (the oldest due tasks, which they are) for `runner`, in one call.
fn claim_these(store: &dyn TaskExecutionStore, runner: Uuid, tasks: &[Uuid]) -> Vec<Lease> {
    let claimed = store
        .claim_ready(runner, tasks.len() as u32)
        .expect("claim_ready");
    let got: Vec<Uuid> = claimed.iter().map(|c| c.task.id).collect();
    assert_eq!(got, tasks, "the claim took the batch's tasks, by id");
    claimed.into_iter().map(|c| c.lease).collect()
}

/// Tasks of the free-for-all race.
const RACED: usize = 400;

/// Sweeps the sweeper makes while the runners work.
const SWEEPS: usize = 60;

fn racing_claims_completions_and_sweeps_never_deadlock(kind: Backend) {
    let f = Fixture::with(
        kind,
        Setup {
            pool_size: THREADS as u32 + 1,
            ..Setup::default()
        },
    );
    let wf = workflow();
    let created: Vec<TaskExecution> = ready_tasks(f.store(), wf, RACED, 1);
    let sweeping = Arc::new(AtomicBool::new(true));
    // Every claim is stale to this sweeper: it resets whatever it finds claimed and not locked.
    let far_future = f.now() + TimeDelta::days(1);
    let sweeper = {
        let (store, sweeping) = (Arc::clone(&f.store), Arc::clone(&sweeping));
        thread::spawn(move || {
            let mut reset = 0;
            for _ in 0..SWEEPS {
                let recovery = store
                    .recover_stale_claims(far_future, i32::MAX)
                    .unwrap_or_else(|err| panic!("recover_stale_claims failed: {err:?}"));
                reset += recovery.reset.len();
                assert!(recovery.abandoned.is_empty());
                thread::yield_now();
            }
            sweeping.store(false, Ordering::Release);
            reset
        })
    };
    let runners = {
        let sweeping = Arc::clone(&sweeping);
        on_threads(&f.store, move |i, store| {
            let runner = Uuid::now_v7();
            let mut completed = 0;
            loop {
                // Read before the claim: once the sweeper is done, every reset it made is
                // committed, so an empty claim then means nothing is left.
                let swept_out = !sweeping.load(Ordering::Acquire);
                let claimed = store
                    .claim_ready(runner, 7 + i as u32)
                    .unwrap_or_else(|err| panic!("claim_ready failed: {err:?}"));
                if claimed.is_empty() {
                    if swept_out {
                        break;
                    }
                    thread::yield_now();
                    continue;
                }
                let mut leases: Vec<Lease> = claimed.iter().map(|c| c.lease).collect();
                // Half the runners hand their batch over in descending id order.
                if i % 2 == 1 {
                    leases.reverse();
                }
                let completion = store
                    .complete_many(&leases)
                    .unwrap_or_else(|err| panic!("complete_many failed: {err:?}"));
                completed += completion.completed.len();
            }
            completed
        })
    };
    let reset = sweeper.join().expect("sweeper panicked");
    let completed: usize = runners.iter().sum();
    assert_eq!(completed, RACED, "{kind}: every task completed once");
    for task in &created {
        let row = f.store.get(task.id).expect("get");
        assert_eq!(row.status, TaskStatus::Completed);
        checked_history(&f, &row);
    }
    let recovered: usize = created
        .iter()
        .map(|t| f.store.get(t.id).expect("get").recovery_attempts as usize)
        .sum();
    assert_eq!(
        recovered, reset,
        "{kind}: every reset is counted on its task"
    );
}
