//! Many threads on one store: no lost update, no double transition.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;

use dal_core::{DalError, NewTaskExecution, TaskExecutionStore, TaskStatus};

use super::Case;
use super::support::{task_in, workflow};
use crate::case;
use crate::fixture::{BackendKind, Fixture};

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(concurrent_recovery_resets_lose_no_update),
    case!(concurrent_starts_of_one_task_let_exactly_one_through),
    case!(concurrent_creates_of_one_name_let_exactly_one_through),
];

/// How many threads the concurrency cases run.
pub const THREADS: usize = 8;
const RESETS_PER_THREAD: usize = 50;

/// Runs `work(thread index, store)` on [`THREADS`] threads released together; returns their
/// results in thread order.
pub fn on_threads<T: Send + 'static>(
    store: &Arc<dyn TaskExecutionStore>,
    work: impl Fn(usize, &dyn TaskExecutionStore) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(THREADS));
    let work = Arc::new(work);
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (store, barrier, work) =
                (Arc::clone(store), Arc::clone(&barrier), Arc::clone(&work));
            thread::spawn(move || {
                barrier.wait();
                work(i, &*store)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("worker thread panicked"))
        .collect()
}

fn concurrent_recovery_resets_lose_no_update(kind: BackendKind) {
    let f = Fixture::new(kind);
    let task = task_in(f.store(), workflow(), "t", TaskStatus::Ready, 1);
    let id = task.id;
    let seen = on_threads(&f.store, move |_, store| {
        (0..RESETS_PER_THREAD)
            .map(|_| {
                store
                    .reset_task_for_recovery(id)
                    .expect("reset")
                    .recovery_attempts
            })
            .collect::<Vec<i32>>()
    });
    let total = (THREADS * RESETS_PER_THREAD) as i32;
    assert_eq!(f.store.get(id).unwrap().recovery_attempts, total);
    // Every call saw its own increment: the counts returned are exactly 1..=400.
    let returned: BTreeSet<i32> = seen.iter().flatten().copied().collect();
    assert_eq!(returned, (1..=total).collect::<BTreeSet<i32>>());
    // Each thread saw its own counts rise.
    assert!(
        seen.iter()
            .all(|counts| counts.windows(2).all(|w| w[0] < w[1]))
    );
}

fn concurrent_starts_of_one_task_let_exactly_one_through(kind: BackendKind) {
    let f = Fixture::new(kind);
    for round in 0..10 {
        let task = task_in(
            f.store(),
            workflow(),
            &format!("t{round}"),
            TaskStatus::Ready,
            1,
        );
        let id = task.id;
        let results = on_threads(&f.store, move |_, store| store.mark_running(id));
        let started = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(started, 1, "round {round}: {results:?}");
        for result in &results {
            if let Err(err) = result {
                assert!(
                    matches!(
                        err,
                        DalError::InvalidTransition {
                            from: TaskStatus::Running,
                            to: TaskStatus::Running,
                            ..
                        }
                    ),
                    "{err:?}"
                );
            }
        }
        let winner = results.into_iter().find_map(Result::ok).unwrap();
        assert_eq!(f.store.get(id).unwrap(), winner);
    }
}

fn concurrent_creates_of_one_name_let_exactly_one_through(kind: BackendKind) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let results = on_threads(&f.store, move |i, store| {
        store.create(&NewTaskExecution::new(wf, "only-once").with_max_attempts(1 + i as i32))
    });
    let created: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(created.len(), 1, "{results:?}");
    for result in &results {
        if let Err(err) = result {
            assert!(
                matches!(err, DalError::AlreadyExists { workflow_execution_id, task_name }
                    if *workflow_execution_id == wf && task_name == "only-once"),
                "{err:?}"
            );
        }
    }
    assert_eq!(
        f.store.list_for_workflow(wf).unwrap(),
        vec![created[0].clone()]
    );
}
