//! The store's operations as `async fn`s (feature `tokio`).
//!
//! [`AsyncStore`] runs each blocking operation on tokio's blocking pool (`spawn_blocking`), at
//! most `max_in_flight` at once (a semaphore, sized like the connection pool; the others wait
//! asynchronously). A call is the blocking operation unchanged: the same statements, atomicity
//! and [`DalError`]s. Dropping its future before it got a permit sends nothing; once it runs,
//! the operation finishes (completely or not at all) and its result is discarded.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::error::{DalError, Result};
use crate::plan::Transition;
use crate::{
    ClaimStore, Claimed, Completion, Cycle, ExecutionEvent, Finished, HistoryStore, Lease,
    NewTaskExecution, PruneCursor, Pruned, QueueLag, Recovery, RetentionStore, RetryStats,
    StatusCounts, SubStatus, TaskExecution, TaskExecutionStore, TaskStatus, TaskStore, Wake,
    WorkflowReads,
};

/// A store whose operations are `async fn`s, each running the blocking operation of the
/// wrapped store on tokio's blocking pool. Cloning it shares the store and the bound.
pub struct AsyncStore<S: ?Sized = dyn TaskExecutionStore> {
    store: Arc<S>,
    permits: Arc<Semaphore>,
}

impl<S: ?Sized> Clone for AsyncStore<S> {
    fn clone(&self) -> Self {
        AsyncStore { store: Arc::clone(&self.store), permits: Arc::clone(&self.permits) }
    }
}

impl<S: ?Sized> std::fmt::Debug for AsyncStore<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncStore")
            .field("available_permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl<S: TaskExecutionStore + ?Sized + 'static> AsyncStore<S> {
    /// Wraps `store`; at most `max_in_flight` calls (at least 1) run at once, the others wait
    /// for their turn without blocking a thread. Give it the store's pool size.
    pub fn new(store: Arc<S>, max_in_flight: usize) -> Self {
        AsyncStore { store, permits: Arc::new(Semaphore::new(max_in_flight.max(1))) }
    }

    /// [`WakeStore::wait_for_work`] as a future, on tokio's timer (a runtime with
    /// `enable_time`); it takes no permit of the blocking pool. Dropped before it returns, it
    /// leaves nothing behind and takes no wake-up from other waiters.
    pub async fn wait_for_work(&self, timeout: std::time::Duration) -> Result<Wake> {
        self.store.wakeups().wait_async(timeout).await
    }

    /// The wrapped store's wake-ups.
    pub fn wakeups(&self) -> &crate::wake::Wakeups {
        self.store.wakeups()
    }

    /// Runs `call` on the blocking pool once a permit is free. A panic of the call is resumed
    /// in the caller; a runtime shutting down while the call waited is
    /// [`DalError::Connection`] (the call did not run).
    async fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce(&S) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| DalError::Connection { source: Box::new(e) })?;
        let store = Arc::clone(&self.store);
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            call(&store)
        });
        match handle.await {
            Ok(result) => result,
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => Err(DalError::Connection { source: Box::new(err) }),
        }
    }
}

/// How an async call owns a parameter of kind `$kind` while the blocking call runs.
macro_rules! own {
    (val $p:ident) => {
        $p
    };
    (ref $p:ident) => {
        $p.to_owned()
    };
    (strs $p:ident) => {
        $p.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
    };
}

/// How the blocking call borrows an owned parameter back.
macro_rules! lend {
    (val $p:ident) => {
        $p
    };
    (ref $p:ident) => {
        std::borrow::Borrow::borrow(&$p)
    };
    (strs $p:ident) => {
        &$p.iter().map(String::as_str).collect::<Vec<&str>>()
    };
}

macro_rules! async_methods {
    ($($trait:ident {
        $($op:ident($($p:ident : $kind:ident $($t:ty)?),*) -> $out:ty;)*
    })*) => {
        impl<S: TaskExecutionStore + ?Sized + 'static> AsyncStore<S> {
            $($(
                #[doc = concat!(
                    "[`", stringify!($trait), "::", stringify!($op),
                    "`], run on the blocking pool (see [`AsyncStore`])."
                )]
                pub async fn $op(
                    &self,
                    $($p: $crate::operation_param!($kind $($t)?)),*
                ) -> Result<$out> {
                    $(let $p = own!($kind $p);)*
                    self.run(move |store| <S as $trait>::$op(store, $(lend!($kind $p)),*))
                        .await
                }
            )*)*
        }
    };
}

crate::store_operations!(async_methods);
