//! The variants of any backend the suite runs: the history off ([`Variant::no_history`]), and
//! every call made through [`dal_core::AsyncStore`] ([`Variant::through_async`]).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dal_core::prelude::*;
use uuid::Uuid;

use crate::case;
use crate::cases::support::{ready_tasks, workflow};
use crate::operations::Statements;
use crate::suite::{
    Backend, Case, Fixture, OwnCase, Run, Setup, StoreSetup, TestBackend, TestDatabase, Traits,
};

pub struct Variant {
    inner: Backend,
    traits: Traits,
    through_async: bool,
}

impl Variant {
    /// `inner` with the history off, sending `counts` and keeping `prepared` per connection.
    pub fn no_history(inner: Backend, counts: Statements, prepared: usize) -> Backend {
        let t = inner.traits();
        let name = leak(format!("{}_no_history", t.name));
        let title = leak(format!("{}, history off", t.title));
        let history = History::Off;
        let traits =
            Traits { name, title, counts, prepared_per_connection: prepared, history, ..t };
        Box::leak(Box::new(Variant { inner, traits, through_async: false }))
    }

    /// `inner`, each call of the cases through the async store on a tokio runtime.
    pub fn through_async(inner: Backend) -> Backend {
        let traits = Traits { name: leak(format!("async_{}", inner.name())), ..inner.traits() };
        Box::leak(Box::new(Variant { inner, traits, through_async: true }))
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl TestBackend for Variant {
    fn traits(&self) -> Traits {
        self.traits
    }

    fn database(&self, connections: u32) -> Box<dyn TestDatabase> {
        self.inner.database(connections)
    }

    fn open(&self, database: &dyn TestDatabase, setup: &StoreSetup) -> Arc<dyn TaskExecutionStore> {
        let store = self.inner.open(database, setup);
        if !self.through_async {
            return store;
        }
        let in_flight = usize::try_from(setup.pool_size).unwrap_or(1);
        Arc::new(ThroughAsync(AsyncStore::new(store, in_flight)))
    }
}

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

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        let builder = builder.worker_threads(2).thread_name("dal-async-suite").enable_time();
        builder.build().expect("a tokio runtime")
    });
    &RUNTIME
}

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

impl WakeStore for ThroughAsync {
    fn wakeups(&self) -> &dal_core::wake::Wakeups {
        self.0.wakeups()
    }

    fn wait_for_work(&self, timeout: Duration) -> Result<Wake> {
        runtime().block_on(self.0.wait_for_work(timeout))
    }
}

/// `base` with every group and `own`; the history off (`no_history`: counts, prepared); async.
pub fn runs(base: Backend, own: Vec<OwnCase>, no_history: (Statements, usize)) -> Vec<Run> {
    let (counts, prepared) = no_history;
    let with_async = [crate::cases::calls(), vec![("async", ASYNC)]].concat();
    vec![
        Run(base, crate::cases::all(), own, None),
        Run(
            Variant::no_history(base, counts, prepared),
            crate::cases::without_history(),
            vec![],
            None,
        ),
        Run(Variant::through_async(base), with_async, vec![], None),
    ]
}
