//! The store traits and their one implementation, [`Store`], over any [`Backend`]: `tasks`
//! ([`TaskStore`]), `claims` (the runner protocol, [`ClaimStore`]), `reads` ([`HistoryStore`],
//! [`WorkflowReads`]), `retention` ([`RetentionStore`]). What every operation shares (time,
//! ids, guarded writes, retries of conflicts, tracing) is here.

mod claims;
mod floor;
mod reads;
mod retention;
mod tasks;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use claims::ClaimStore;
pub use floor::FULL_SCAN_EVERY;
pub use reads::{HistoryStore, WorkflowReads};
pub use retention::{MAX_PRUNE_BATCH, RetentionStore};
pub use tasks::TaskStore;

use crate::TaskExecution;
use crate::backend::Backend;
use crate::clock::{self, Clock, Ids};
use crate::error::{DalError, DatabaseErrorKind, Result};
use crate::plan::Plan;
use crate::wake::{Wake, Wakeups};

/// Everything a store offers, for `&dyn TaskExecutionStore` or `Arc<dyn TaskExecutionStore>`.
/// Implemented for every type that implements the traits it groups.
pub trait TaskExecutionStore:
    TaskStore + ClaimStore + WakeStore + HistoryStore + WorkflowReads + RetentionStore
{
}

impl<T: TaskStore + ClaimStore + WakeStore + HistoryStore + WorkflowReads + RetentionStore>
    TaskExecutionStore for T
{
}

/// Waiting for work: a runner whose claim found nothing waits here instead of polling.
pub trait WakeStore: Send + Sync {
    /// The store's wake-ups; the first call starts the backend's watcher of other processes'
    /// writes (PostgreSQL: one listening connection per store, not per wait).
    fn wakeups(&self) -> &Wakeups;

    /// Blocks until a task may be claimable or `timeout` passes, sending no statement: a write
    /// of this store that leaves tasks `Ready` and unclaimed wakes one waiter per task, another
    /// process's write wakes waiters as [`crate::WakeSource`] says, and a task due later wakes
    /// one at its due time. [`Wake::Work`] is a hint: the claim that follows may find nothing
    /// (another runner was first). A zero timeout returns at once. Errors:
    /// [`DalError::Validation`] for a timeout over [`crate::wake::MAX_WAIT`].
    fn wait_for_work(&self, timeout: std::time::Duration) -> Result<Wake> {
        self.wakeups().wait(timeout)
    }
}

impl<B: Backend> WakeStore for Store<B> {
    fn wakeups(&self) -> &Wakeups {
        self.wakeups.started(|bell| self.backend.watch(Arc::downgrade(bell)))
    }
}

/// How many times a guarded write is tried when, each time it matched no row, the row read
/// right after it met the guard (another writer changed it in between).
const GUARDED_WRITE_TRIES: usize = 3;

/// How many times in all a write is made when it keeps failing on a transient conflict
/// ([`DalError::is_conflict`]: the database rolled the statement back, so nothing was written).
const CONFLICT_TRIES: u32 = 4;

/// The first wait before a write is made again after a conflict; it doubles with each try, and
/// each wait is drawn between half and one and a half of it.
const CONFLICT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(2);

/// The wait before try `tries + 1`: [`CONFLICT_BACKOFF`] doubled per earlier try, jittered so
/// that writers that met in a conflict do not meet again.
fn backoff(tries: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = CONFLICT_BACKOFF.as_micros() as u64 * (1u64 << tries.saturating_sub(1).min(10));
    // A random number without a dependency: std seeds each RandomState from the OS.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    std::time::Duration::from_micros(base / 2 + random % base.max(1))
}

/// A task-execution store over backend `B`: the implementation of the store traits for every
/// backend. Open one with `dal_sqlite::open` / `dal_postgres::connect` (or their `Options`).
pub struct Store<B> {
    backend: B,
    clock: Arc<dyn Clock>,
    ids: Ids,
    floors: floor::Floors,
    history: History,
    wakeups: Wakeups,
}

/// Whether a store writes the execution history (`execution_events`). With [`History::Off`]
/// no write inserts events, and every write is one statement (no transaction around it on
/// SQLite); rows, guards and errors are the same either way. The setting is the store's, not
/// the schema's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum History {
    /// Every change writes its event in the same atomic unit (the default).
    #[default]
    Kept,
    /// No events are written.
    Off,
}

impl History {
    /// `plan` as this setting writes it: without its event when the history is off.
    pub fn of(self, plan: Plan) -> Plan {
        match self {
            History::Kept => plan,
            History::Off => plan.unlogged(),
        }
    }
}

impl<B: Backend> Store<B> {
    /// A store over `backend`, reading time from `clock`. Backend crates call this.
    pub fn new(backend: B, clock: Arc<dyn Clock>) -> Self {
        let wakeups = Wakeups::new(backend.wake_source(), Arc::clone(&clock));
        Store {
            backend,
            wakeups,
            clock,
            ids: Ids::new(),
            floors: floor::Floors::default(),
            history: History::Kept,
        }
    }

    /// The same store, writing the execution history or not (default: [`History::Kept`]).
    pub fn with_history(mut self, history: History) -> Self {
        self.history = history;
        self
    }

    /// Whether the store writes the execution history.
    pub fn history(&self) -> History {
        self.history
    }

    /// The store's connection pool, for statements of your own (reports, extensions). Its
    /// connections are set up as the store's.
    pub fn pool(&self) -> &B::Pool {
        self.backend.pool()
    }

    /// The time of an operation: the clock's reading cut to microseconds.
    fn now(&self) -> DateTime<Utc> {
        let now = clock::to_micros(self.clock.now());
        self.floors.saw(now);
        now
    }

    /// A UUIDv7 for time `now`; ids made by one store increase strictly, also within a
    /// millisecond.
    fn new_id(&self, now: DateTime<Utc>) -> Uuid {
        self.ids.at(now)
    }

    /// Applies `plan` to task `id` with one guarded write. When it matches no row, reads the
    /// row once to say why; when the row meets the guard by then, it changed in between and
    /// the write is tried again.
    fn guarded_write(&self, id: Uuid, plan: Plan) -> Result<TaskExecution> {
        let plan = self.history.of(plan);
        let mut backend_calls = 0;
        let result = (|| {
            for _ in 0..GUARDED_WRITE_TRIES {
                backend_calls += 1;
                if let Some(row) =
                    self.retrying(plan.operation, || self.backend.apply(id, &plan))?
                {
                    self.wakeups.bell().ring_for(std::slice::from_ref(&row));
                    return Ok(row);
                }
                backend_calls += 1;
                let found = self.backend.get(id)?;
                if let Some(rejection) =
                    plan.guard.rejection(id, plan.effects.status, found.as_ref())
                {
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
        self.trace(plan.operation, Some(id), backend_calls, result)
    }

    /// Runs `write`, and runs it again (up to [`CONFLICT_TRIES`] in all, after a jittered,
    /// growing wait) while it fails on a transient conflict, which the database rolled back.
    /// Each retry is logged at `warn` level with the operation and the error.
    fn retrying<T>(
        &self,
        operation: &'static str,
        mut write: impl FnMut() -> Result<T>,
    ) -> Result<T> {
        let mut tries = 1;
        loop {
            match write() {
                Err(err) if err.is_conflict() && tries < CONFLICT_TRIES => {
                    let wait = backoff(tries);
                    tracing::warn!(
                        backend = B::NAME,
                        operation,
                        tries,
                        wait_us = wait.as_micros() as u64,
                        error = %err,
                        "transient conflict, nothing was written; trying again"
                    );
                    std::thread::sleep(wait);
                    tries += 1;
                }
                other => return other,
            }
        }
    }

    /// Traces `outcome` of `operation` at `debug` level, and returns it.
    fn trace<T>(
        &self,
        operation: &'static str,
        id: Option<Uuid>,
        backend_calls: usize,
        outcome: Result<T>,
    ) -> Result<T> {
        match &outcome {
            Ok(_) => {
                tracing::debug!(backend = B::NAME, operation, task_id = ?id, backend_calls, "ok")
            }
            Err(err) => {
                tracing::debug!(backend = B::NAME, operation, task_id = ?id, backend_calls, error = %err, "rejected")
            }
        }
        outcome
    }

    /// [`Store::trace`] of an operation of one backend call on no one task.
    fn traced<T>(&self, operation: &'static str, outcome: Result<T>) -> Result<T> {
        self.trace(operation, None, 1, outcome)
    }

    /// [`Store::traced`] of `read`, or an empty result without a round trip when `nothing`.
    fn read<T: Default>(
        &self,
        operation: &'static str,
        nothing: bool,
        read: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if nothing { Ok(T::default()) } else { self.traced(operation, read()) }
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
    DalError::Database { kind: DatabaseErrorKind::UnexpectedData, source: message.into() }
}
