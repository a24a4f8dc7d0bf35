//! What the suite needs of a backend: the factory a backend hands to [`crate::suite::main`].
//!
//! The suite's cases are written once, against [`dal_core::TaskExecutionStore`]. All they
//! need of a backend goes through [`TestBackend`] (a database of a case's own, the statement
//! counts the backend promises, the few things whose SQL differs) and [`TestDatabase`] (stores
//! on that database, raw SQL, a lock held by another connection, the backend's fault). A new
//! backend implements the two traits and calls `dal_tests::suite::main(&[&ITS_BACKEND])` from
//! its crate's `tests/conformance.rs`; [`crate::backends`] holds the two of this workspace.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dal_core::{History, ManualClock, TaskExecutionStore};
use uuid::Uuid;

use crate::operations::{Operation, Statements};

/// A backend as the suite holds it.
pub type Backend = &'static dyn TestBackend;

/// Diesel's instrumentation for each new connection of a store (see [`crate::counter`]).
pub type Instrumentation =
    Arc<dyn Fn() -> Box<dyn diesel::connection::Instrumentation> + Send + Sync>;

/// A backend under test: how to make a database for a case, and what the backend promises.
pub trait TestBackend: Send + Sync + 'static {
    /// Lower-case name: the first part of each test name (`sqlite::create::...`).
    fn name(&self) -> &'static str;

    /// The header of the backend's column in the README's statement table.
    fn title(&self) -> &'static str;

    /// A new, empty database (a file, a schema) for one case, removed when dropped. The case's
    /// stores hold at most `connections` connections to it at once (with the first store's
    /// pool): a server with a connection limit reserves them.
    fn database(&self, connections: u32) -> Box<dyn TestDatabase>;

    /// How many statements each shape of operation sends (every statement, `BEGIN`/`COMMIT`
    /// included): the backend's column of the statement table, asserted by the `statements`
    /// cases.
    fn statement_counts(&self) -> Statements;

    /// How many statements `operation` sends (from [`TestBackend::statement_counts`]).
    fn statements(&self, operation: Operation) -> usize {
        operation.statements(&self.statement_counts())
    }

    /// How many statements one connection keeps prepared after every operation of the table
    /// ran once on it.
    fn prepared_per_connection(&self) -> usize;

    /// How many statements a retention batch prepares on its first use.
    fn prepared_per_prune_batch(&self) -> usize;

    /// What a write returns when another connection holds the lock it needs past the store's
    /// lock timeout.
    fn lock_timeout(&self) -> LockTimeout;

    /// Raw SQL: the literal of task id `id` in this backend's SQL.
    fn id_literal(&self, id: Uuid) -> String;

    /// Raw SQL: statements after which the database refuses to insert events of type
    /// `event_type` (e.g. `failed`), failing the statement that tries.
    fn refuse_events_sql(&self, event_type: &str) -> String;

    /// Raw SQL: statements that delete every task and every event.
    fn empty_tables_sql(&self) -> &'static str;

    /// The backend's own cases, run beside the suite's: what only this backend has (its ways
    /// to fail to open, its server's restarts, its error codes).
    fn own_cases(&self) -> Vec<OwnCase> {
        Vec::new()
    }

    /// Whether the stores the suite opens write the execution history (default: they do).
    fn history(&self) -> History {
        History::Kept
    }

    /// The groups of the suite's cases this backend runs (default: every group, with the
    /// history group that fits [`TestBackend::history`]).
    fn groups(&self) -> Vec<crate::cases::Group> {
        crate::cases::groups_for(self.history())
    }

    /// Why the backend cannot run here (a service it needs is missing), if it cannot: its
    /// cases are then reported as ignored, and the reason printed once.
    fn unavailable(&self) -> Option<String> {
        None
    }
}

impl fmt::Display for dyn TestBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Debug for dyn TestBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A case of one backend's own: named `<backend>::<group>::<name>`.
#[derive(Clone, Copy)]
pub struct OwnCase {
    /// The group, as in the suite's names.
    pub group: &'static str,
    /// The case's name inside its group.
    pub name: &'static str,
    /// Runs the case; panics on failure.
    pub run: fn(),
}

/// What a write gets when the lock it needs is held past the store's lock timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockTimeout {
    /// [`dal_core::DalError::Busy`]: typed and retryable (SQLite's `SQLITE_BUSY`).
    Busy,
    /// [`dal_core::DatabaseErrorKind::LockNotAvailable`]: typed and retryable (PostgreSQL's
    /// `lock_timeout`, SQLSTATE 55P03).
    LockNotAvailable,
}

/// Which plans a PostgreSQL store's sessions use; other backends have one kind of plan and
/// ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Plans {
    /// The server's default (`plan_cache_mode = auto`).
    #[default]
    Default,
    /// Planned anew for each execution (`force_custom_plan`).
    Custom,
    /// One generic plan per prepared statement (`force_generic_plan`).
    Generic,
}

/// How a store is opened on a [`TestDatabase`].
#[derive(Clone)]
pub struct StoreSetup {
    /// The pool size.
    pub pool_size: u32,
    /// How long a write waits for a lock another connection holds; `None`: the backend's
    /// default for the suite (SQLite's 5 s busy timeout; no limit on PostgreSQL).
    pub lock_timeout: Option<Duration>,
    /// The plans of the store's sessions.
    pub plans: Plans,
    /// The store's clock.
    pub clock: Arc<ManualClock>,
    /// Instrumentation for each connection, to count the statements; `None`: not counted.
    pub instrumentation: Option<Instrumentation>,
    /// Whether the store writes the execution history.
    pub history: History,
}

/// A database of one case: stores on it, and access outside the store.
pub trait TestDatabase: Send + Sync {
    /// Opens a store on the database, migrating it if needed. The first store opened uses the
    /// connections the database was made for; later ones reserve their own.
    fn open(&self, setup: &StoreSetup) -> Arc<dyn TaskExecutionStore>;

    /// Runs `sql` (statements separated by `;`) over a connection of its own, outside any
    /// store.
    fn execute(&self, sql: &str) -> Result<(), String>;

    /// Another connection holding a lock the store needs to change task `id` (PostgreSQL: the
    /// row's lock, in an open transaction; SQLite: the database's write lock), until the
    /// holder commits or drops.
    fn hold_lock_on(&self, id: Uuid) -> Box<dyn HeldLock>;

    /// Injects the backend's fault once (PostgreSQL: the server terminates the store's
    /// connections; SQLite: another connection holds the write lock past a short busy
    /// timeout), taking a few tens of milliseconds, and returns how many faults it made.
    fn inject_fault(&self) -> usize;

    /// Checks the database's own consistency where the backend has such a check (SQLite's
    /// `PRAGMA integrity_check`); `Ok` where it has none.
    fn check_integrity(&self) -> Result<(), String>;

    /// The database, for a backend's own cases to downcast.
    fn as_any(&self) -> &dyn Any;
}

/// A lock held by another connection (see [`TestDatabase::hold_lock_on`]).
pub trait HeldLock: Send {
    /// How many other sessions wait for this lock now, where the database can tell
    /// (PostgreSQL's `pg_blocking_pids`); `None` where it cannot (SQLite).
    fn waiters(&mut self) -> Option<usize>;

    /// Runs one statement inside the holder's transaction; returns the rows it changed.
    fn execute(&mut self, sql: &str) -> Result<usize, String>;

    /// Commits the holder's transaction, releasing the lock.
    fn commit(&mut self) -> Result<(), String>;
}
