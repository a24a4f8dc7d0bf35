//! Waiting for work: which writes wake a waiter, and how many; another store's writes (as
//! another process's); due times; bad timeouts; a dropped async wait; the queue's lag.

use super::support::{expect_err, ready_tasks, workflow};
use crate::case;
use crate::suite::{Backend, Case, Fixture, Plans, Setup};
use chrono::TimeDelta;
use dal_core::wake::MAX_WAIT;
use dal_core::{
    AsyncStore, DalError, Finished, NewTaskExecution, Problem, QueueLag, RetriedTask,
    TaskExecutionStore, TaskStatus, Wake, WakeSource,
};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const CASES: &[Case] = &[
    case!(each_write_that_makes_a_task_claimable_wakes_one_waiter_per_task),
    case!(a_task_due_later_wakes_a_waiter_at_its_due_time),
    case!(another_stores_writes_wake_a_waiter),
    case!(one_task_and_several_waiters_wake_one),
    case!(bad_timeouts_are_refused_and_an_idle_wait_sends_nothing),
    case!(a_dropped_async_wait_leaves_nothing_behind),
    case!(the_queue_lag_counts_due_tasks_their_age_and_the_running),
];

/// Long enough never to pass in a case that expects a wake-up.
const LONG: Duration = Duration::from_secs(30);

fn now(s: &dyn TaskExecutionStore) -> Wake {
    s.wait_for_work(Duration::ZERO).expect("a wait of zero")
}

/// The store's watcher started, and the wake-up its start may give (after a listener connects)
/// taken: it waits until a wait times out (but where waiters wake by polling).
fn settled(s: &dyn TaskExecutionStore) {
    if let WakeSource::Polling { .. } = s.wakeups().source() {
        return;
    }
    while s.wait_for_work(Duration::from_millis(300)).expect("a wait") == Wake::Work {}
}

/// `wakes` waiters of `n` permits: `n` times `Work`, then `Timeout` (a wait of zero each).
fn assert_wakes(s: &dyn TaskExecutionStore, n: usize, after: &str) {
    let woke: Vec<Wake> = (0..=n).map(|_| now(s)).collect();
    let expected: Vec<Wake> =
        (0..=n).map(|i| if i < n { Wake::Work } else { Wake::Timeout }).collect();
    assert_eq!(woke, expected, "after {after}");
}

/// Runs `waiter` on a thread once it waits: `write` is made while it does.
fn while_waiting<T: Send>(
    s: &dyn TaskExecutionStore,
    waiters: usize,
    waiter: impl Fn() -> T + Sync,
    write: impl FnOnce(),
) -> Vec<T> {
    thread::scope(|scope| {
        let threads: Vec<_> = (0..waiters).map(|_| scope.spawn(&waiter)).collect();
        let started = Instant::now();
        while s.wakeups().waiting() < waiters {
            assert!(started.elapsed() < LONG, "the waiters never waited");
            thread::yield_now();
        }
        write();
        threads.into_iter().map(|t| t.join().expect("a waiter panicked")).collect()
    })
}

/// Each write that leaves tasks `Ready` and unclaimed (a create, `mark_ready`, a release, a
/// reset, a sweep, a retry, a cycle's retry) wakes one waiter per task, at once; the others
/// (a claim, a heartbeat, a completion, a create `NotStarted`) none. A claim that finds
/// nothing clears what is left.
fn each_write_that_makes_a_task_claimable_wakes_one_waiter_per_task(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    settled(s);
    let (wf, runner) = (workflow(), Uuid::now_v7());
    let later = s.create(&NewTaskExecution::new(wf, "later")).unwrap();
    assert_wakes(s, 0, "a create NotStarted");
    s.mark_ready(later.id).unwrap();
    assert_wakes(s, 1, "mark_ready");
    ready_tasks(s, wf, 2, 3);
    assert_wakes(s, 2, "a create of two Ready tasks");
    let claimed = s.claim_ready(runner, 10).unwrap();
    assert_eq!(claimed.len(), 3);
    assert_wakes(s, 0, "a claim");
    let [a, b, c] = [0, 1, 2].map(|i| claimed[i].lease);
    s.heartbeat(&a).unwrap();
    s.complete(&a).unwrap();
    assert_wakes(s, 0, "a heartbeat and a completion");
    s.release(&b).unwrap();
    assert_wakes(s, 1, "a release");
    s.fail_and_retry(&c, "again", f.now()).unwrap();
    assert_wakes(s, 1, "fail_and_retry");
    s.reset_task_for_recovery(c.task_id).unwrap();
    assert_wakes(s, 1, "reset_task_for_recovery");
    let claimed = s.claim_ready(runner, 10).unwrap();
    assert_eq!(claimed.len(), 2);
    f.tick();
    let recovered = s.recover_stale_claims(f.now(), 5).unwrap();
    assert_eq!(recovered.reset.len(), 2);
    assert_wakes(s, 2, "a sweep resetting two");
    let claimed = s.claim_ready(runner, 3).unwrap();
    let retried = RetriedTask { lease: claimed[0].lease, error: "again".into(), retry_at: f.now() };
    let cycle = Finished { retried: vec![retried], ..Finished::default() };
    let done = s.finish_and_claim(runner, &cycle, 0).unwrap();
    assert_eq!(done.retried.len(), 1);
    assert_wakes(s, 1, "a cycle's retry");

    // A claim leaves the permits of what it took (they stand for work until one finds none).
    ready_tasks(s, workflow(), 1, 1);
    assert_eq!(s.claim_ready(runner, 1).unwrap().len(), 1);
    assert_wakes(s, 1, "a create, then a claim");
    s.create(&NewTaskExecution::new(wf, "ready").with_status(TaskStatus::Ready)).unwrap();
    assert_eq!(s.claim_ready(runner, 10).unwrap().len(), 2);
    assert_eq!(s.claim_ready(runner, 10).unwrap(), []);
    assert_wakes(s, 0, "a claim that found nothing");
}

/// A retry or a create due later wakes a waiter at its due time, not before.
fn a_task_due_later_wakes_a_waiter_at_its_due_time(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    settled(s);
    let runner = Uuid::now_v7();
    let in_300_ms = || f.now() + TimeDelta::milliseconds(300);
    ready_tasks(s, workflow(), 1, 2);
    assert_wakes(s, 1, "a create");
    let lease = s.claim_ready(runner, 2).unwrap()[0].lease;
    s.fail_and_retry(&lease, "later", in_300_ms()).unwrap();
    let delayed =
        NewTaskExecution { retry_at: Some(in_300_ms()), ..NewTaskExecution::new(workflow(), "d") };
    s.create(&delayed.with_status(TaskStatus::Ready)).unwrap();
    assert_wakes(s, 0, "writes of tasks due in 300 ms");
    let started = Instant::now();
    assert_eq!(s.wait_for_work(LONG).unwrap(), Wake::Work);
    assert_eq!(s.wait_for_work(LONG).unwrap(), Wake::Work);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250) && waited < LONG, "{waited:?}");
    f.clock.advance(TimeDelta::milliseconds(300));
    assert_eq!(s.claim_ready(runner, 10).unwrap().len(), 2);
}

/// A write of another store on the database (as another process's) wakes a waiter, by the
/// backend's signal ([`WakeSource`]); one due later, by its due time where the signal says it.
fn another_stores_writes_wake_a_waiter(kind: Backend) {
    let f = Fixture::with(kind, Setup { pool_size: 2, lock_timeout: None });
    let (s, other) = (f.store(), f.other_store(2, Plans::Default));
    assert!(matches!(
        s.wakeups().source(),
        WakeSource::Notifications { .. }
            | WakeSource::ChangeChecks { .. }
            | WakeSource::Polling { .. }
    ));
    settled(s);
    let runner = Uuid::now_v7();
    let claim = || {
        let started = Instant::now();
        while started.elapsed() < LONG {
            let claimed = s.claim_ready(runner, 1).unwrap();
            if !claimed.is_empty() {
                return claimed;
            }
            s.wait_for_work(LONG).unwrap();
        }
        panic!("nothing claimed");
    };
    let news = [NewTaskExecution::new(workflow(), "other").with_status(TaskStatus::Ready)];
    let claimed = while_waiting(s, 1, claim, || drop(other.create_many(&news).unwrap()));
    assert_eq!(claimed[0][0].task.task_name, "other");
    // Due in 300 ms (the other store's clock is this one's): woken then, and it is claimable.
    let due = NewTaskExecution {
        retry_at: Some(f.now() + TimeDelta::milliseconds(300)),
        ..news[0].clone()
    };
    let due = NewTaskExecution { task_name: "due".into(), ..due };
    let waited = while_waiting(
        s,
        1,
        || {
            let started = Instant::now();
            while s.wait_for_work(LONG).unwrap() == Wake::Work
                && started.elapsed() < Duration::from_millis(250)
            {}
            started.elapsed()
        },
        || drop(other.create(&due).unwrap()),
    );
    assert!(waited[0] >= Duration::from_millis(250) && waited[0] < LONG, "{waited:?}");
    f.clock.advance(TimeDelta::milliseconds(300));
    assert_eq!(s.claim_ready(runner, 1).unwrap()[0].task.task_name, "due");
}

/// Eight waiters and one task made claimable by the store: one wakes and claims it, the others
/// time out without a claim (but where a signal cannot tell this store's writes from another
/// process's, or waiters poll: then each claims at most once, for nothing).
fn one_task_and_several_waiters_wake_one(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    settled(s);
    let waiter = || match s.wait_for_work(Duration::from_millis(500)).unwrap() {
        Wake::Work => Some(s.claim_ready(Uuid::now_v7(), 2).unwrap().len()),
        Wake::Timeout => None,
    };
    let woke = while_waiting(s, 8, waiter, || drop(ready_tasks(s, workflow(), 1, 1)));
    let mut claims: Vec<usize> = woke.into_iter().flatten().collect();
    claims.sort_unstable();
    match s.wakeups().source() {
        WakeSource::ChangeChecks { .. } | WakeSource::Polling { .. } => {
            assert_eq!(claims.pop(), Some(1));
            assert!(claims.iter().all(|&n| n == 0), "{claims:?}");
        }
        _ => assert_eq!(claims, [1]),
    }
}

/// A timeout over the limit is a validation error; zero returns at once; an idle wait sends no
/// statement.
fn bad_timeouts_are_refused_and_an_idle_wait_sends_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    settled(s);
    let err = expect_err(s.wait_for_work(MAX_WAIT + Duration::from_millis(1)));
    let max = MAX_WAIT.as_millis() as i64;
    let out_of_range = Problem::OutOfRange { min: 0, max, value: max + 1 };
    assert!(
        matches!(&err, DalError::Validation(v) if v.field == "timeout" && v.problem == out_of_range),
        "{err:?}"
    );
    let sent = f.log.total().sql.len();
    let started = Instant::now();
    assert_eq!(now(s), Wake::Timeout);
    assert_eq!(s.wait_for_work(Duration::from_millis(100)).unwrap(), Wake::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(f.log.total().sql.len(), sent, "statements sent while waiting");
}

/// An async wait dropped before it returns leaves no waiter and takes no wake-up; a kept one
/// wakes on a write.
fn a_dropped_async_wait_leaves_nothing_behind(kind: Backend) {
    let f = Fixture::new(kind);
    settled(f.store());
    let store = AsyncStore::new(Arc::clone(&f.store), 2);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_time().build().unwrap();
    runtime.block_on(async {
        for _ in 0..3 {
            let dropped =
                tokio::time::timeout(Duration::from_millis(20), store.wait_for_work(LONG));
            assert!(dropped.await.is_err(), "the wait returned");
        }
        let err = store.wait_for_work(MAX_WAIT * 2).await.map(drop);
        assert!(matches!(err, Err(DalError::Validation(_))), "{err:?}");
    });
    assert_eq!(store.wakeups().waiting(), 0);
    let waiting = runtime.spawn({
        let store = store.clone();
        async move { store.wait_for_work(LONG).await }
    });
    while store.wakeups().waiting() == 0 {
        thread::yield_now();
    }
    ready_tasks(f.store(), workflow(), 1, 1);
    assert_eq!(runtime.block_on(waiting).unwrap().unwrap(), Wake::Work);
    assert_wakes(f.store(), 0, "the wake-up taken");
}

/// The lag: `Ready` tasks due now, how long the oldest has been due, `Running` tasks.
fn the_queue_lag_counts_due_tasks_their_age_and_the_running(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    assert_eq!(s.queue_lag().unwrap(), QueueLag::default());
    let wf = workflow();
    ready_tasks(s, wf, 3, 1);
    let later = NewTaskExecution {
        retry_at: Some(f.now() + TimeDelta::seconds(60)),
        ..NewTaskExecution::new(wf, "later")
    };
    s.create(&later.with_status(TaskStatus::Ready)).unwrap();
    s.create(&NewTaskExecution::new(wf, "not started")).unwrap();
    s.claim_ready(Uuid::now_v7(), 1).unwrap();
    f.clock.advance(TimeDelta::seconds(10));
    let sent = f.log.total().sql.len();
    let lag = s.queue_lag().unwrap();
    assert_eq!(f.log.total().sql.len(), sent + 1, "one statement");
    assert_eq!(lag, QueueLag { due: 2, oldest_due_age: Some(TimeDelta::seconds(10)), running: 1 });
}
