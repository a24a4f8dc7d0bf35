//! Helpers shared by the cases.

use crate::model::Failure;
use crate::suite::Fixture;
use dal_core::{
    DalError, ExecutionEvent, Lease, NewTaskExecution, Problem, TaskExecution, TaskExecutionStore,
    TaskStatus, TaskStore,
};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub fn workflow() -> Uuid {
    Uuid::now_v7()
}

/// The row `NewTaskExecution::new(wf, name)` is created as, with id `id`, at `now`: every
/// default spelled out.
pub fn new_row(
    id: Uuid,
    wf: Uuid,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> TaskExecution {
    TaskExecution {
        id,
        workflow_execution_id: wf,
        task_name: name.into(),
        status: TaskStatus::NotStarted,
        attempt: 1,
        max_attempts: 1,
        trigger_rules: serde_json::json!({"type": "Always"}),
        task_configuration: serde_json::json!({}),
        error_details: None,
        last_error: None,
        retry_at: None,
        started_at: None,
        completed_at: None,
        recovery_attempts: 0,
        last_recovery_at: None,
        claimed_by: None,
        heartbeat_at: None,
        claim_count: 0,
        abandoned_at: None,
        sub_status: None,
        created_at: now,
        updated_at: now,
    }
}

/// A task `name` of `wf` with `max_attempts`, brought to `status` by the public operations.
pub fn task_in(
    store: &dyn TaskStore,
    wf: Uuid,
    name: &str,
    status: TaskStatus,
    max_attempts: i32,
) -> TaskExecution {
    let task = store
        .create(&NewTaskExecution::new(wf, name).with_max_attempts(max_attempts))
        .expect("create");
    let id = task.id;
    let (ready, run) =
        (|| store.mark_ready(id), || store.mark_ready(id).and(store.mark_running(id)));
    let reached = match status {
        TaskStatus::NotStarted => Ok(task),
        TaskStatus::Ready => ready(),
        TaskStatus::Running => run(),
        TaskStatus::Completed => run().and(store.mark_completed(id)),
        TaskStatus::Failed => run().and(store.mark_failed(id, "boom")),
        TaskStatus::Skipped => store.mark_skipped(id, "not needed"),
    };
    let reached = reached.expect("a transition on the way");
    assert_eq!(reached.status, status);
    reached
}

pub fn expect_err<T: std::fmt::Debug>(result: Result<T, DalError>) -> DalError {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(err) => err,
    }
}

/// Asserts that the stored row of `before.id` is still exactly `before`.
pub fn assert_unchanged(store: &dyn TaskStore, before: &TaskExecution) {
    assert_eq!(&store.get(before.id).expect("get"), before, "the row changed");
}

/// The error `result` failed with, as the model names it.
pub fn fails<T: std::fmt::Debug>(result: Result<T, DalError>) -> Failure {
    Failure::from(expect_err(result))
}

/// The error of `call`, which must fail after sending `statements` statements.
pub fn fails_after<T: std::fmt::Debug>(
    f: &Fixture,
    statements: usize,
    call: impl FnOnce() -> Result<T, DalError>,
) -> Failure {
    let (result, counts) = f.log.measure(call);
    let failure = fails(result);
    assert_eq!(counts.statements, statements, "{failure:?}");
    failure
}

/// Asserts that `call` is refused as `field`'s `problem` before anything is sent.
pub fn invalid<T: std::fmt::Debug>(
    f: &Fixture,
    field: &str,
    problem: Problem,
    call: impl FnOnce() -> Result<T, DalError>,
) {
    assert_eq!(fails_after(f, 0, call), Failure::Validation(field.into(), problem), "{field}");
}

/// Every call under a lease, with `lease`: heartbeat, complete, fail, fail and retry, release.
pub fn under_lease(s: &dyn TaskExecutionStore, lease: &Lease) -> [Failure; 5] {
    let at = s.get(lease.task_id).map_or(chrono::DateTime::UNIX_EPOCH, |t| t.updated_at);
    [
        fails(s.heartbeat(lease)),
        fails(s.complete(lease)),
        fails(s.fail(lease, "late")),
        fails(s.fail_and_retry(lease, "late", at)),
        fails(s.release(lease)),
    ]
}

/// Asserts that every call under `lease` is refused as lost, leaving `row` unchanged.
pub fn stale_lease(s: &dyn TaskExecutionStore, lease: &Lease, row: &TaskExecution) {
    assert_eq!(under_lease(s, lease), [(); 5].map(|()| Failure::ClaimLost(row.id)));
    assert_unchanged(s, row);
}

/// A deterministic pseudo-random sequence (xorshift64*): differs between threads, repeats
/// between runs.
#[derive(Debug, Clone)]
pub struct Sequence(u64);

impl Sequence {
    pub fn new(seed: u64) -> Self {
        Sequence(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next number in `low..=high`.
    pub fn next_in(&mut self, low: u32, high: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        low + (x % u64::from(high - low + 1)) as u32
    }
}

/// Creates `n` tasks of workflow `wf` in status `Ready`, with one statement.
pub fn ready_tasks(
    store: &dyn TaskStore,
    wf: Uuid,
    n: usize,
    max_attempts: i32,
) -> Vec<TaskExecution> {
    let news: Vec<NewTaskExecution> = (0..n)
        .map(|i| {
            NewTaskExecution::new(wf, format!("r{i:05}"))
                .with_status(TaskStatus::Ready)
                .with_max_attempts(max_attempts)
        })
        .collect();
    store.create_many(&news).expect("create_many")
}

/// `read` made again while it fails with a retryable error (a lost connection, a busy
/// database), for up to 30 s: a fault case's reads meet the faults too.
pub fn eventually<T>(read: impl Fn() -> Result<T, DalError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match read() {
            Ok(value) => return value,
            Err(err) if err.is_retryable() && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(err) => panic!("a read failed: {err:?}"),
        }
    }
}

/// The events of `row`'s task, checked: they replay to the row (none with the history off).
pub fn checked_history(f: &Fixture, row: &TaskExecution) -> Vec<ExecutionEvent> {
    let events = f.store.events_for_task(row.id).expect("events_for_task");
    if f.keeps_history() {
        crate::model::replay(row, &events).unwrap_or_else(|e| panic!("{}: {e}", row.id));
    } else {
        assert_eq!(events, [], "no events with the history off");
    }
    events
}

/// How many threads the concurrency cases run.
pub const THREADS: usize = 8;

/// Runs `work(i)` for each `i` below `n` on its own thread, all released together: the results
/// in thread order.
pub fn race<T: Send>(n: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let (barrier, work) = (&Barrier::new(n), &work);
    thread::scope(|scope| {
        let spawn = |i| {
            scope.spawn(move || {
                barrier.wait();
                work(i)
            })
        };
        let threads: Vec<_> = (0..n).map(spawn).collect();
        threads.into_iter().map(|t| t.join().expect("a racing thread panicked")).collect()
    })
}

/// Runs `work(thread index, store)` on [`THREADS`] threads released together (see [`race`]).
pub fn on_threads<T: Send>(
    store: &dyn TaskExecutionStore,
    work: impl Fn(usize, &dyn TaskExecutionStore) -> T + Sync,
) -> Vec<T> {
    race(THREADS, |i| work(i, store))
}

/// More rows than one SQLite statement binds (2,978): several statements in one transaction
/// there; one on PostgreSQL (a column an array).
pub const BEYOND_ONE_CHUNK: usize = 7_000;
