//! The variants of any backend the suite runs: every call made through [`dal_core::AsyncStore`]
//! ([`Async`]), and the history off ([`Unlogged`]).

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dal_core::{
    AsyncStore, ClaimStore, Claimed, Completion, Cycle, ExecutionEvent, Finished, HistoryStore,
    Lease, NewTaskExecution, PruneCursor, Pruned, Recovery, Result, RetentionStore, RetryStats,
    StatusCounts, SubStatus, TaskExecution, TaskExecutionStore, TaskStatus, TaskStore,
    WorkflowReads,
};
use dal_core::{History, Transition};
use uuid::Uuid;

use crate::case;
use crate::cases::support::{ready_tasks, workflow};
use crate::operations::Statements;
use crate::suite::{
    Backend, Case, Fixture, HeldLock, LockTimeout, Setup, StoreSetup, TestBackend, TestDatabase,
};

/// `inner`, every call made through the async interface: the cases call a blocking store whose
/// every operation runs the async operation on a tokio runtime, which runs the backend's
/// blocking operation on the blocking pool.
pub struct Async {
    /// The backend underneath.
    pub inner: Backend,
    /// The test-name prefix, e.g. `async_sqlite`.
    pub name: &'static str,
}

impl TestBackend for Async {
    fn name(&self) -> &'static str {
        self.name
    }

    fn title(&self) -> &'static str {
        self.inner.title()
    }

    fn database(&self, connections: u32) -> Box<dyn TestDatabase> {
        Box::new(AsyncDatabase(self.inner.database(connections)))
    }

    fn statement_counts(&self) -> Statements {
        self.inner.statement_counts()
    }

    fn prepared_per_connection(&self) -> usize {
        self.inner.prepared_per_connection()
    }

    fn prepared_per_prune_batch(&self) -> usize {
        self.inner.prepared_per_prune_batch()
    }

    fn lock_timeout(&self) -> LockTimeout {
        self.inner.lock_timeout()
    }

    fn id_literal(&self, id: Uuid) -> String {
        self.inner.id_literal(id)
    }

    fn refuse_events_sql(&self, event_type: &str) -> String {
        self.inner.refuse_events_sql(event_type)
    }

    fn empty_tables_sql(&self) -> &'static str {
        self.inner.empty_tables_sql()
    }
}

/// The async interface's own case.
pub const ASYNC: &[Case] = &[case!(the_runtime_runs_on_while_calls_wait)];

/// On a runtime of one worker thread, with one call in flight at a time: a call waiting for a
/// lock does not hold the worker (the case's own future runs meanwhile and releases the lock),
/// and a second call waits for the first (it reads what the first wrote).
fn the_runtime_runs_on_while_calls_wait(kind: Backend) {
    let lock_timeout = Duration::from_secs(20);
    let f = Fixture::with(kind, Setup { pool_size: 2, lock_timeout: Some(lock_timeout) });
    let task = ready_tasks(f.store(), workflow(), 1, 1).remove(0);
    let store = AsyncStore::new(Arc::clone(&f.store), 1);
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    let started = Instant::now();
    let mut held = f.hold_lock_on(task.id);
    let begun = f.begins();
    let (reset, read) = runtime.block_on(async {
        let first = tokio::spawn({
            let store = store.clone();
            async move { store.reset_task_for_recovery(task.id).await }
        });
        let second = tokio::spawn({
            let store = store.clone();
            async move { store.get(task.id).await }
        });
        // Until the first call waits for the lock, this future keeps getting the one worker.
        while !f.waits_for(&mut *held, begun) {
            assert!(started.elapsed() < lock_timeout, "the call never waited");
            tokio::task::yield_now().await;
        }
        held.commit().expect("release the lock");
        (first.await.expect("first"), second.await.expect("second"))
    });
    let reset = reset.expect("the reset, once the lock was released");
    assert_eq!(reset.recovery_attempts, 1);
    assert_eq!(read.expect("the read"), reset);
    assert!(started.elapsed() < lock_timeout);
}

/// The inner backend's database; its stores are opened behind the async interface.
struct AsyncDatabase(Box<dyn TestDatabase>);

impl TestDatabase for AsyncDatabase {
    fn open(&self, setup: &StoreSetup) -> Arc<dyn TaskExecutionStore> {
        let store = self.0.open(setup);
        let in_flight = usize::try_from(setup.pool_size).unwrap_or(1);
        Arc::new(ThroughAsync(AsyncStore::new(store, in_flight)))
    }

    fn execute(&self, sql: &str) -> std::result::Result<(), String> {
        self.0.execute(sql)
    }

    fn hold_lock_on(&self, id: Uuid) -> Box<dyn HeldLock> {
        self.0.hold_lock_on(id)
    }

    fn inject_fault(&self) -> usize {
        self.0.inject_fault()
    }

    fn check_integrity(&self) -> std::result::Result<(), String> {
        self.0.check_integrity()
    }

    fn as_any(&self) -> &dyn Any {
        self.0.as_any()
    }
}

/// The runtime the async calls run on (the cases' threads wait on it with `block_on`).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dal-async-suite")
            .build()
            .expect("a tokio runtime")
    });
    &RUNTIME
}

/// A blocking store whose every operation is the [`AsyncStore`]'s, awaited.
struct ThroughAsync(AsyncStore);

macro_rules! blocking_over_async {
    ($($trait:ident {
        $($op:ident($($p:ident : $kind:ident $($t:ty)?),*) -> $out:ty;)*
    })*) => {
        $(impl $trait for ThroughAsync {
            $(fn $op(&self, $($p: dal_core::operation_param!($kind $($t)?)),*) -> Result<$out> {
                runtime().block_on(self.0.$op($($p),*))
            })*
        })*
    };
}

dal_core::store_operations!(blocking_over_async);

/// `inner`, with the history off: every write without its event.
pub struct Unlogged {
    /// The backend underneath.
    pub inner: Backend,
    /// The test-name prefix, e.g. `sqlite_no_history`.
    pub name: &'static str,
    /// The README column's heading.
    pub title: &'static str,
    /// What each shape of operation sends without events.
    pub counts: Statements,
    /// The statements a connection keeps prepared after the whole table ran.
    pub prepared: usize,
}

impl TestBackend for Unlogged {
    fn name(&self) -> &'static str {
        self.name
    }

    fn title(&self) -> &'static str {
        self.title
    }

    fn database(&self, connections: u32) -> Box<dyn TestDatabase> {
        self.inner.database(connections)
    }

    fn statement_counts(&self) -> Statements {
        self.counts
    }

    fn prepared_per_connection(&self) -> usize {
        self.prepared
    }

    fn prepared_per_prune_batch(&self) -> usize {
        self.inner.prepared_per_prune_batch()
    }

    fn lock_timeout(&self) -> LockTimeout {
        self.inner.lock_timeout()
    }

    fn id_literal(&self, id: Uuid) -> String {
        self.inner.id_literal(id)
    }

    fn refuse_events_sql(&self, event_type: &str) -> String {
        self.inner.refuse_events_sql(event_type)
    }

    fn empty_tables_sql(&self) -> &'static str {
        self.inner.empty_tables_sql()
    }

    fn history(&self) -> History {
        History::Off
    }
}
