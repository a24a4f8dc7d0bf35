//! Faults: connections killed under running calls (PostgreSQL), a lock held past the busy
//! timeout (SQLite), a lock held past the lock timeout. Every call either did all it says or
//! failed with a typed error and changed nothing; the store recovers; SQLite's file stays intact.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dal_core::{DalError, DatabaseErrorKind, NewTaskExecution, TaskExecution, TaskExecutionStore};
use uuid::Uuid;

use super::support::{THREADS, on_threads};
use super::support::{assert_unchanged, eventually, expect_err, ready_tasks, workflow};
use crate::case;
use crate::suite::Case;
use crate::suite::{Backend, LockTimeout};
use crate::suite::{Fixture, Setup};

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(calls_under_faults_are_all_or_nothing_and_the_store_recovers),
    case!(a_write_that_cannot_get_its_lock_in_time_changes_nothing),
];

/// The fixture's pool in the fault case.
const POOL_SIZE: u32 = 4;

/// How long the faults are injected.
const UNDER_FIRE: Duration = Duration::from_millis(1_500);

/// A task as a fault case sees it: the row and how many events it has.
fn state(store: &dyn TaskExecutionStore, id: Uuid) -> (TaskExecution, usize) {
    eventually(|| Ok((store.get(id)?, store.events_for_task(id)?.len())))
}

/// Injects the backend's fault again and again until `stop` (see
/// [`crate::suite::TestDatabase::inject_fault`]). Returns how many faults were injected.
fn inject(f: &Fixture, stop: &AtomicBool) -> usize {
    let mut faults = 0;
    while !stop.load(Ordering::Relaxed) {
        faults += f.database.inject_fault();
    }
    faults
}

/// The error a fault may cause: a lost connection (PostgreSQL) or a busy database (SQLite).
fn is_fault(err: &DalError) -> bool {
    matches!(err, DalError::Connection { .. } | DalError::Busy { .. })
}

fn calls_under_faults_are_all_or_nothing_and_the_store_recovers(kind: Backend) {
    let f = Fixture::with(
        kind,
        Setup {
            pool_size: POOL_SIZE,
            lock_timeout: Some(Duration::from_millis(40)),
        },
    );
    let wf = workflow();
    let tasks: Vec<Uuid> = ready_tasks(f.store(), wf, THREADS, 1)
        .iter()
        .map(|t| t.id)
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failed, applied_anyway) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let store = Arc::clone(&f.store);
    // The events a change writes: its own, unless the history is off.
    let per = usize::from(f.keeps_history());
    let faults = thread::scope(|scope| {
        let injector = scope.spawn(|| inject(&f, &stop));
        let workers = {
            let (stop, calls, failed, applied_anyway) = (
                Arc::clone(&stop),
                Arc::clone(&calls),
                Arc::clone(&failed),
                Arc::clone(&applied_anyway),
            );
            let tasks = tasks.clone();
            scope.spawn(move || {
                on_threads(&store, move |i, store| {
                    let id = tasks[i];
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        calls.fetch_add(1, Ordering::Relaxed);
                        let (before, events_before) = state(store, id);
                        // A reset with its event, and a create with its event.
                        let reset = store.reset_task_for_recovery(id);
                        let name = format!("made-{i}-{n}");
                        let created = store.create(&NewTaskExecution::new(wf, name.clone()));
                        let (after, events_after) = state(store, id);
                        match reset {
                            Ok(row) => {
                                assert_eq!(row, after);
                                assert_eq!((after.recovery_attempts, events_after), (before.recovery_attempts + 1, events_before + per));
                            }
                            Err(err) => {
                                assert!(is_fault(&err), "{err:?}");
                                failed.fetch_add(1, Ordering::Relaxed);
                                // All or nothing: unchanged, or changed with its event (the
                                // connection broke after the commit).
                                let changed = (after.recovery_attempts, events_after) == (before.recovery_attempts + 1, events_before + per);
                                let untouched = after == before && events_after == events_before;
                                assert!(changed || untouched, "half-written: {before:?} / {after:?}, events {events_before} / {events_after}");
                                if changed {
                                    applied_anyway.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        let listed = loop {
                            match store.list_for_workflow(wf) {
                                Ok(rows) => break rows,
                                Err(err) => assert!(is_fault(&err), "{err:?}"),
                            }
                        };
                        let made: Vec<&TaskExecution> = listed.iter().filter(|t| t.task_name == name).collect();
                        match created {
                            Ok(row) => assert_eq!(made, vec![&row]),
                            Err(err) => {
                                assert!(is_fault(&err), "{err:?}");
                                failed.fetch_add(1, Ordering::Relaxed);
                                assert!(made.len() <= 1);
                            }
                        }
                        if let Some(row) = made.first() {
                            assert_eq!(state(store, row.id).1, per, "a created task has exactly its creation event");
                        }
                    }
                })
            })
        };
        thread::sleep(UNDER_FIRE);
        stop.store(true, Ordering::Relaxed);
        workers.join().expect("workers");
        injector.join().expect("injector")
    });
    assert!(faults > 0, "no fault was injected");
    // After the faults, the pool recovers by itself. A connection the injector killed after the
    // workers' last use of it fails the one call that finds it (with `Connection`, changing
    // nothing), and is retired: at most a pool's worth of calls fail, then every call succeeds.
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
        eprintln!(
            "{kind}: {} calls under {faults} injected faults, {} failed with a typed error, {} of those applied before the fault",
            calls.load(Ordering::Relaxed) * 2,
            failed.load(Ordering::Relaxed),
            applied_anyway.load(Ordering::Relaxed)
        );
    }
}

fn a_write_that_cannot_get_its_lock_in_time_changes_nothing(kind: Backend) {
    let f = Fixture::with(
        kind,
        Setup {
            pool_size: 2,
            lock_timeout: Some(Duration::from_millis(100)),
        },
    );
    let task = ready_tasks(f.store(), workflow(), 1, 1).remove(0);
    let events = f.store.events_for_task(task.id).unwrap();
    // Another connection holds the lock: SQLite's write lock, or PostgreSQL's row lock.
    let held = f.hold_lock_on(task.id);
    let started = Instant::now();
    let err = expect_err(f.store.reset_task_for_recovery(task.id));
    match kind.lock_timeout() {
        // SQLite's SQLITE_BUSY after the busy timeout: typed, retryable.
        LockTimeout::Busy => {
            assert!(matches!(err, DalError::Busy { .. }), "{err:?}");
            assert!(err.is_retryable());
        }
        // PostgreSQL's lock_timeout (SQLSTATE 55P03): typed, retryable.
        LockTimeout::LockNotAvailable => {
            assert!(
                matches!(
                    err,
                    DalError::Database {
                        kind: DatabaseErrorKind::LockNotAvailable,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(err.is_retryable() && !err.is_conflict());
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(held);
    assert_unchanged(f.store(), &task);
    assert_eq!(f.store.events_for_task(task.id).unwrap(), events);
    f.assert_intact();
    let after = f.store.reset_task_for_recovery(task.id).unwrap();
    assert_eq!(after.recovery_attempts, 1);
}
