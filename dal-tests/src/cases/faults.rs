//! Faults: a lock held past the timeout; the backend's fault (killed connections, a write lock
//! held past the busy timeout) under running calls.

use super::support::{THREADS, eventually, expect_err, on_threads, ready_tasks, workflow};
use crate::case;
use crate::suite::{Backend, Case, Fixture, LockTimeout, Setup};
use dal_core::{DalError, DatabaseErrorKind, NewTaskExecution, TaskExecution, TaskExecutionStore};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const CASES: &[Case] = &[case!(calls_under_faults_are_all_or_nothing_and_the_store_recovers)];

const POOL_SIZE: u32 = 4;

/// A task as a fault case sees it: the row and its events.
fn state(store: &dyn TaskExecutionStore, id: Uuid) -> (TaskExecution, usize) {
    eventually(|| Ok((store.get(id)?, store.events_for_task(id)?.len())))
}

/// The error a fault may cause: a lost connection (PostgreSQL) or a busy database (SQLite).
fn is_fault(err: &DalError) -> bool {
    matches!(err, DalError::Connection { .. } | DalError::Busy { .. })
}

/// Each call does all it says or fails typed, changing nothing (or after its commit); the store
/// recovers, the database intact.
fn calls_under_faults_are_all_or_nothing_and_the_store_recovers(kind: Backend) {
    let lock_timeout = Some(Duration::from_millis(40));
    let f = Fixture::with(kind, Setup { pool_size: POOL_SIZE, lock_timeout });
    let wf = workflow();
    let tasks: Vec<Uuid> = ready_tasks(f.store(), wf, THREADS, 1).iter().map(|t| t.id).collect();
    let first = tasks[0];
    // Another connection holds the lock: SQLite's write lock, or PostgreSQL's row lock.
    let before = state(f.store(), first);
    let held = f.hold_lock_on(first);
    let started = Instant::now();
    let err = expect_err(f.store.reset_task_for_recovery(first));
    let typed = match kind.lock_timeout() {
        LockTimeout::Busy => matches!(err, DalError::Busy { .. }),
        LockTimeout::LockNotAvailable => {
            matches!(err, DalError::Database { kind: DatabaseErrorKind::LockNotAvailable, .. })
        }
    };
    assert!(typed && err.is_retryable() && !err.is_conflict(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(held);
    assert_eq!(state(f.store(), first), before);
    let reset = f.store.reset_task_for_recovery(first).unwrap();
    assert_eq!(reset.recovery_attempts, 1);

    // The events a change writes: its own, unless the history is off.
    let per = usize::from(f.keeps_history());
    let stop = AtomicBool::new(false);
    let work = |i: usize, s: &dyn TaskExecutionStore| {
        let (id, mut calls, mut failed, mut applied) = (tasks[i], 0, 0, 0);
        while !stop.load(Relaxed) {
            calls += 2;
            let (before, events_before) = state(s, id);
            let reset = s.reset_task_for_recovery(id);
            let name = format!("made-{i}-{calls}");
            let created = s.create(&NewTaskExecution::new(wf, name.clone()));
            let (after, events) = state(s, id);
            // The reset with its event, or nothing (unless it broke after the commit).
            let whole = (after.recovery_attempts, events)
                == (before.recovery_attempts + 1, events_before + per);
            match reset {
                Ok(row) => assert!(whole && row == after, "{before:?} / {after:?}"),
                Err(err) => {
                    assert!(is_fault(&err), "{err:?}");
                    let untouched = after == before && events == events_before;
                    assert!(whole || untouched, "half-written: {before:?} / {after:?}");
                    (failed, applied) = (failed + 1, applied + usize::from(whole));
                }
            }
            let listed = eventually(|| s.list_for_workflow(wf));
            let made: Vec<&TaskExecution> = listed.iter().filter(|t| t.task_name == name).collect();
            match created {
                Ok(row) => assert_eq!(made, [&row]),
                Err(err) => {
                    assert!(is_fault(&err) && made.len() <= 1, "{err:?}");
                    failed += 1;
                }
            }
            // A created task has exactly its creation event.
            if let Some(row) = made.first() {
                assert_eq!(state(s, row.id).1, per);
            }
        }
        (calls, failed, applied)
    };
    let (faults, counts) = thread::scope(|scope| {
        let workers = scope.spawn(|| on_threads(f.store(), work));
        let (mut faults, until) = (0, Instant::now() + Duration::from_millis(1_500));
        while Instant::now() < until {
            faults += f.database.inject_fault();
        }
        stop.store(true, Relaxed);
        (faults, workers.join().unwrap())
    });
    assert!(faults > 0, "no fault was injected");
    // Each connection killed after its last use fails the one call that finds it, then retires.
    let mut dead_found = 0;
    let mut recovered = |call: &dyn Fn() -> Result<TaskExecution, DalError>| loop {
        match call() {
            Ok(row) => return row,
            Err(err) if is_fault(&err) && dead_found < POOL_SIZE => dead_found += 1,
            Err(err) => panic!("after {dead_found} dead connections found: {err:?}"),
        }
    };
    for id in &tasks {
        let before = recovered(&|| f.store.get(*id));
        let after = recovered(&|| f.store.reset_task_for_recovery(*id));
        assert_eq!(after.recovery_attempts, before.recovery_attempts + 1);
    }
    f.assert_intact();
    if std::env::var_os("DAL_REPORT").is_some() {
        let sum = |k: fn(&(usize, usize, usize)) -> usize| counts.iter().map(k).sum::<usize>();
        let (calls, failed, applied) = (sum(|c| c.0), sum(|c| c.1), sum(|c| c.2));
        let typed = format!("{failed} failed with a typed error ({applied} applied before)");
        eprintln!("{kind}: {calls} calls under {faults} injected faults, {typed}");
    }
}
