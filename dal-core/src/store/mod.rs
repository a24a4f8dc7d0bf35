//! The store traits and their one implementation, [`Store`], over any [`Backend`].
//!
//! `tasks` holds the foundation operations ([`TaskStore`]), `claims` the runner protocol
//! ([`ClaimStore`]), `history` the reads of the execution history ([`HistoryStore`]). What every operation shares (time, ids, guarded writes, tracing) is here.

mod claims;
mod history;
mod tasks;
mod workflows;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use claims::ClaimStore;
pub use history::HistoryStore;
pub use tasks::TaskStore;
pub use workflows::WorkflowReads;

use crate::backend::Backend;
use crate::clock::{self, Clock};
use crate::error::{DalError, DatabaseErrorKind, Result};
use crate::ids::Ids;
use crate::plan::Plan;
use crate::{TaskExecution, TaskStatus};

/// Everything a store offers, for `&dyn TaskExecutionStore` or `Arc<dyn TaskExecutionStore>`.
/// Implemented for every type that implements the traits it groups.
pub trait TaskExecutionStore: TaskStore + ClaimStore + HistoryStore + WorkflowReads {}

impl<T: TaskStore + ClaimStore + HistoryStore + WorkflowReads> TaskExecutionStore for T {}

/// How many times a guarded write is tried when, each time it matched no row, the row read
/// right after it met the guard (another writer changed it in between).
const GUARDED_WRITE_TRIES: usize = 3;

/// A task-execution store over backend `B`: the implementation of the store traits for every
/// backend. Open one with `dal_sqlite::open` / `dal_postgres::connect` (or their `Options`).
pub struct Store<B> {
    backend: B,
    clock: Arc<dyn Clock>,
    ids: Ids,
}

impl<B: Backend> Store<B> {
    /// A store over `backend`, reading time from `clock`. Backend crates call this.
    pub fn new(backend: B, clock: Arc<dyn Clock>) -> Self {
        Store {
            backend,
            clock,
            ids: Ids::new(),
        }
    }

    /// The backend, for what is specific to it.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The clock the store reads time from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The time of an operation: the clock's reading cut to microseconds.
    fn now(&self) -> DateTime<Utc> {
        clock::to_micros(self.clock.now())
    }

    /// A UUIDv7 for time `now`; ids made by one store increase strictly, also within a
    /// millisecond.
    fn new_id(&self, now: DateTime<Utc>) -> Uuid {
        self.ids.at(now)
    }

    /// Applies `plan` to task `id` with one guarded write. When it matches no row, reads the
    /// row once to say why (`to` is the status the caller asked for); when the row meets the
    /// guard by then, it changed in between and the write is tried again.
    fn guarded_write(&self, id: Uuid, plan: &Plan, to: TaskStatus) -> Result<TaskExecution> {
        let mut statements = 0;
        let result = (|| {
            for _ in 0..GUARDED_WRITE_TRIES {
                statements += 1;
                if let Some(row) = self.backend.apply(id, plan)? {
                    return Ok(row);
                }
                statements += 1;
                let found = self.backend.get(id)?;
                if let Some(rejection) = plan.guard.rejection(id, to, found.as_ref()) {
                    return Err(rejection);
                }
            }
            Err(DalError::Database {
                kind: DatabaseErrorKind::SerializationFailure,
                source: format!(
                    "task execution {id} kept changing between the guarded write and the read \
                     that explains it ({GUARDED_WRITE_TRIES} tries)"
                )
                .into(),
            })
        })();
        self.trace(plan.operation, Some(id), &result, statements);
        result
    }

    fn trace(
        &self,
        operation: &'static str,
        id: Option<Uuid>,
        outcome: &Result<impl Sized>,
        statements: usize,
    ) {
        match outcome {
            Ok(_) => tracing::debug!(backend = B::NAME, operation, task_id = ?id, statements, "ok"),
            Err(err) => {
                tracing::debug!(backend = B::NAME, operation, task_id = ?id, statements, error = %err, "rejected")
            }
        }
    }
}

impl<B: Backend> fmt::Debug for Store<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &B::NAME)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

fn unexpected(message: &'static str) -> DalError {
    DalError::Database {
        kind: DatabaseErrorKind::UnexpectedData,
        source: message.into(),
    }
}
