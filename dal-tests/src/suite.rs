//! The suite: cases written once against [`dal_core::TaskExecutionStore`] and a backend's
//! factory ([`TestBackend`]: a database of a case's own, the statement counts it promises, the
//! few things whose SQL differs; [`TestDatabase`]: stores on that database, raw SQL, a lock
//! held by another connection, the backend's fault), run by each backend crate's own
//! `tests/conformance` with its factory and its variants ([`Run`], [`main`]).

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::clock::to_micros;
use dal_core::{Clock, History, ManualClock, TaskExecutionStore};
use libtest_mimic::{Arguments, Failed, Trial};
use uuid::Uuid;

use crate::counter::StatementLog;
use crate::operations::{Operation, Statements};
use crate::provision;

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

    /// Whether the stores the suite opens write the execution history (default: they do).
    fn history(&self) -> History {
        History::Kept
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

/// How a case's store is opened.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// The pool size.
    pub pool_size: u32,
    /// How long a write waits for a lock another connection holds; `None`: the backend's
    /// default for the suite (see [`StoreSetup::lock_timeout`]).
    pub lock_timeout: Option<Duration>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup { pool_size: 8, lock_timeout: None }
    }
}

/// The time every fixture's clock starts at. It has nanoseconds, which the store must cut to
/// microseconds.
pub fn start_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_772_366_400, 123_456_789).unwrap_or_default() // 2026-03-01T12:00:00.123456789Z
}

/// A store of one backend on a database of its own.
pub struct Fixture {
    /// Which backend.
    pub kind: Backend,
    /// The store, shareable with threads.
    pub store: Arc<dyn TaskExecutionStore>,
    /// The store's clock.
    pub clock: Arc<ManualClock>,
    /// Every statement the store's connections sent.
    pub log: StatementLog,
    /// The case's database. Declared after the store, so dropped after it: the database
    /// outlives its connections.
    pub database: Box<dyn TestDatabase>,
}

impl Fixture {
    /// A fixture with the default [`Setup`].
    pub fn new(kind: Backend) -> Self {
        Fixture::with(kind, Setup::default())
    }

    /// A fixture opened with `setup`. All the store's connections are opened up front, none
    /// later in the background.
    pub fn with(kind: Backend, setup: Setup) -> Self {
        let clock = Arc::new(ManualClock::new(start_time()));
        let log = StatementLog::new();
        let database = kind.database(setup.pool_size);
        let store = database.open(&StoreSetup {
            pool_size: setup.pool_size,
            lock_timeout: setup.lock_timeout,
            plans: Plans::Default,
            clock: clock.clone(),
            instrumentation: Some(log.factory()),
            history: kind.history(),
        });
        Fixture { kind, store, clock, log, database }
    }

    /// Another store on the fixture's database, with a pool and a clock of its own and no
    /// statement counting, as a second process would open it; its sessions use `plans`.
    pub fn other_store(&self, pool_size: u32, plans: Plans) -> Arc<dyn TaskExecutionStore> {
        self.database.open(&StoreSetup {
            pool_size,
            lock_timeout: None,
            plans,
            clock: Arc::new(ManualClock::new(self.clock.now())),
            instrumentation: None,
            history: self.kind.history(),
        })
    }

    /// Whether the fixture's store writes the execution history: the cases check the events
    /// written only when it does (and that none are written when it does not).
    pub fn keeps_history(&self) -> bool {
        self.kind.history() == History::Kept
    }

    /// The fixture's database as the backend's own type `T`, for a backend's own cases.
    pub fn database_as<T: 'static>(&self) -> Option<&T> {
        self.database.as_any().downcast_ref::<T>()
    }

    /// Runs statements (`;`-separated, in the backend's SQL) on the fixture's database outside
    /// the store, over a connection of its own. For cases that change the schema under the
    /// store (e.g. to make a write fail).
    pub fn execute_sql(&self, sql: &str) {
        if let Err(err) = self.database.execute(sql) {
            panic!("{sql}: {err}");
        }
    }

    /// Another connection holding a lock the store needs to change task `id` (see
    /// [`TestDatabase::hold_lock_on`]). Released when the holder commits or drops.
    pub fn hold_lock_on(&self, id: uuid::Uuid) -> Box<dyn HeldLock> {
        self.database.hold_lock_on(id)
    }

    /// How many `BEGIN`s the store has sent so far.
    pub fn begins(&self) -> usize {
        self.log.total().sql.iter().filter(|sql| sql.starts_with("BEGIN")).count()
    }

    /// Whether a write of the store now waits for `held`: PostgreSQL tells who waits for the
    /// row; on SQLite, the store has sent a `BEGIN` since it had sent `begun` (its `BEGIN
    /// IMMEDIATE` is what waits).
    pub fn waits_for(&self, held: &mut dyn HeldLock, begun: usize) -> bool {
        held.waiters().map_or_else(|| self.begins() > begun, |n| n > 0)
    }

    /// Fails the case if the database's own consistency check finds a problem.
    pub fn assert_intact(&self) {
        if let Err(problem) = self.database.check_integrity() {
            panic!("{}: the database is damaged: {problem}", self.kind);
        }
    }

    /// The store as a trait object.
    pub fn store(&self) -> &dyn TaskExecutionStore {
        &*self.store
    }

    /// The time the store writes now: the clock cut to microseconds.
    pub fn now(&self) -> DateTime<Utc> {
        to_micros(self.clock.now())
    }

    /// Moves the clock forward by 1.5 s and 1 ns (so that the store must cut the time) and
    /// returns the time the store will write.
    pub fn tick(&self) -> DateTime<Utc> {
        self.clock.advance(TimeDelta::milliseconds(1_500) + TimeDelta::nanoseconds(1));
        self.now()
    }
}

impl fmt::Debug for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture").field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// One conformance case.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name inside its group.
    pub name: &'static str,
    /// Runs the case against a backend; panics on failure.
    pub run: fn(Backend),
}

/// A group of cases: its name and its cases.
pub type Group = (&'static str, &'static [Case]);

/// Makes a [`Case`] of a function.
#[macro_export]
macro_rules! case {
    ($f:ident) => {
        $crate::suite::Case { name: stringify!($f), run: $f }
    };
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

/// One run of the suite: a backend (a factory, or a variant of one), the groups of cases it
/// runs (a variant runs those it can change), and its own cases.
pub struct Run {
    /// The backend.
    pub backend: Backend,
    /// The groups of the suite's cases it runs.
    pub groups: Vec<Group>,
    /// Its own cases.
    pub own: Vec<OwnCase>,
    /// Why it cannot run here (a service it needs is missing), if it cannot: its cases are
    /// reported as ignored, and the reason printed once.
    pub unavailable: Option<String>,
    /// Whether its column of the README's statement table is checked.
    pub in_readme: bool,
}

/// The test binary's `main` for `runs`: every case of every run as a libtest trial named
/// `<backend>::<group>::<case>` (libtest's command line: filters, `--exact`, `--list`, ...),
/// and the README's statement table checked against the runs that are in it; then the
/// PostgreSQL container is stopped if one was started.
pub fn main(runs: Vec<Run>) {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    let mut columns = Vec::new();
    for run in runs {
        let kind = run.backend;
        if let Some(why) = &run.unavailable {
            eprintln!("{kind}: its cases are ignored: {why}");
        }
        let ignored = run.unavailable.is_some();
        for (group, cases) in run.groups {
            for case in cases {
                let test = case.run;
                let name = format!("{kind}::{group}::{}", case.name);
                trials.push(
                    Trial::test(name, move || {
                        test(kind);
                        Ok(())
                    })
                    .with_ignored_flag(ignored),
                );
            }
        }
        for own in run.own {
            let name = format!("{kind}::{}::{}", own.group, own.name);
            trials.push(
                Trial::test(name, move || {
                    (own.run)();
                    Ok(())
                })
                .with_ignored_flag(ignored),
            );
        }
        if run.in_readme {
            columns.push((kind.title(), kind.statement_counts()));
        }
    }
    trials.push(Trial::test("readme::statement_table", move || {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme =
            std::fs::read_to_string(path).map_err(|e| Failed::from(format!("{path}: {e}")))?;
        crate::operations::check_readme_table(&readme, &columns).map_err(Failed::from)
    }));
    let conclusion = libtest_mimic::run(&args, trials);
    provision::postgres::shutdown();
    conclusion.exit();
}
