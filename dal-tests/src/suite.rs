//! Cases written once against a backend's factory ([`TestBackend`]), run by each backend's
//! `tests/conformance` ([`runs`], [`main`]).

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::clock::to_micros;
use dal_core::{Clock, History, ManualClock, TaskExecutionStore};
use diesel::query_dsl::methods::ExecuteDsl;
use diesel::{Connection, RunQueryDsl};
use libtest_mimic::{Arguments, Failed, Trial};
use uuid::Uuid;

use crate::counter::StatementLog;
use crate::operations::{Operation, Statements};
use crate::provision;

pub type Backend = &'static dyn TestBackend;

pub type Instrumentation = crate::counter::Factory;

/// What a backend promises, and the few things whose SQL differs.
#[derive(Clone, Copy)]
pub struct Traits {
    /// The test names' first part (`sqlite::create::...`); the README column's title.
    pub name: &'static str,
    pub title: &'static str,
    /// Statements each shape of operation sends (`BEGIN`/`COMMIT` included), as the README says.
    pub counts: Statements,
    /// Statements kept prepared per connection after the table ran, and per retention batch.
    pub prepared_per_connection: usize,
    pub prepared_per_prune_batch: usize,
    /// What a write returns when another connection holds its lock past the lock timeout.
    pub lock_timeout: LockTimeout,
    /// Raw SQL: an id's literal; making events of a type fail; deleting every task and event.
    pub id_literal: fn(Uuid) -> String,
    pub refuse_events_sql: fn(&str) -> String,
    pub empty_tables_sql: &'static str,
    pub history: History,
}

macro_rules! accessors {
    ($($method:ident: $field:ident -> $type:ty),*) => {
        $(fn $method(&self) -> $type { self.traits().$field })*
    };
}

/// A backend under test: how to make a database for a case, and what it promises ([`Traits`]).
pub trait TestBackend: Send + Sync + 'static {
    fn traits(&self) -> Traits;

    /// A new, empty database for one case, removed on drop, for `connections` at once.
    fn database(&self, connections: u32) -> Box<dyn TestDatabase>;

    /// Opens a store on `database` (a variant wraps it).
    fn open(&self, database: &dyn TestDatabase, setup: &StoreSetup) -> Arc<dyn TaskExecutionStore> {
        database.open(setup)
    }

    accessors!(name: name -> &'static str, title: title -> &'static str,
        statement_counts: counts -> Statements, lock_timeout: lock_timeout -> LockTimeout,
        prepared_per_connection: prepared_per_connection -> usize,
        prepared_per_prune_batch: prepared_per_prune_batch -> usize,
        empty_tables_sql: empty_tables_sql -> &'static str, history: history -> History);
    fn statements(&self, operation: Operation) -> usize {
        operation.statements(&self.statement_counts())
    }
    fn id_literal(&self, id: Uuid) -> String {
        (self.traits().id_literal)(id)
    }
    fn refuse_events_sql(&self, event_type: &str) -> String {
        (self.traits().refuse_events_sql)(event_type)
    }
}

macro_rules! by_name {
    ($($fmt:ident),*) => {$(impl fmt::$fmt for dyn TestBackend {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.name()) }
    })*};
}
by_name!(Debug, Display);

/// What a write gets when its lock is held past the lock timeout: [`dal_core::DalError::Busy`]
/// or [`dal_core::DatabaseErrorKind::LockNotAvailable`] (SQLSTATE 55P03).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockTimeout {
    Busy,
    LockNotAvailable,
}

/// A PostgreSQL store's sessions' `plan_cache_mode`; other backends ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Plans {
    #[default]
    Default,
    Custom,
    Generic,
}

/// How a store is opened on a [`TestDatabase`] (`instrumentation` `None`: not counted).
#[derive(Clone)]
pub struct StoreSetup {
    pub pool_size: u32,
    pub lock_timeout: Option<Duration>,
    pub plans: Plans,
    pub clock: Arc<ManualClock>,
    pub instrumentation: Option<Instrumentation>,
    pub history: History,
}

/// A database of one case: stores on it, and access outside the store.
pub trait TestDatabase: Send + Sync {
    /// Opens a store, migrating if needed.
    fn open(&self, setup: &StoreSetup) -> Arc<dyn TaskExecutionStore>;
    /// Runs `sql` (`;`-separated) over a connection of its own.
    fn execute(&self, sql: &str) -> Result<(), String>;
    /// Another connection holding the lock a write of task `id` needs, until it commits or drops.
    fn hold_lock_on(&self, id: Uuid) -> Box<dyn HeldLock>;
    /// Injects the backend's fault once; returns how many it made.
    fn inject_fault(&self) -> usize;
    /// The database's own consistency check, if any.
    fn check_integrity(&self) -> Result<(), String> {
        Ok(())
    }
    fn as_any(&self) -> &dyn Any;
}

pub trait HeldLock: Send {
    /// How many sessions wait for this lock, where the database can tell.
    fn waiters(&mut self) -> Option<usize>;
    /// Runs one statement inside the holder's transaction; returns the rows it changed.
    fn execute(&mut self, sql: &str) -> Result<usize, String>;
    fn commit(&mut self) -> Result<(), String> {
        self.execute("COMMIT").map(drop)
    }
}

/// A raw connection that has run `sql`: a [`HeldLock`] when `sql` took a lock.
pub struct Holder<C> {
    pub conn: C,
    pub waiters: fn(&mut C) -> Option<usize>,
}

impl<C: Connection + 'static> Holder<C>
where
    diesel::query_builder::SqlQuery: ExecuteDsl<C>,
{
    pub fn connect(
        url: &str,
        sql: &str,
        waiters: fn(&mut C) -> Option<usize>,
    ) -> Result<Self, String> {
        let mut conn = C::establish(url).map_err(|e| format!("connect to {url}: {e}"))?;
        conn.batch_execute(sql).map_err(|e| format!("{sql}: {e}"))?;
        Ok(Holder { conn, waiters })
    }
}

impl<C: Connection + 'static> HeldLock for Holder<C>
where
    diesel::query_builder::SqlQuery: ExecuteDsl<C>,
{
    fn waiters(&mut self) -> Option<usize> {
        (self.waiters)(&mut self.conn)
    }
    fn execute(&mut self, sql: &str) -> Result<usize, String> {
        diesel::sql_query(sql).execute(&mut self.conn).map_err(|e| e.to_string())
    }
}

/// A case's store's pool size, and how long a write waits for a lock (`None`: the default).
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub pool_size: u32,
    pub lock_timeout: Option<Duration>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup { pool_size: 8, lock_timeout: None }
    }
}

/// The time every fixture's clock starts at, with nanoseconds the store must cut.
pub fn start_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_772_366_400, 123_456_789).unwrap_or_default() // 2026-03-01T12:00:00.123456789Z
}

/// A store on a database of its own (declared last: it outlives the store), clock and log.
pub struct Fixture {
    pub kind: Backend,
    pub store: Arc<dyn TaskExecutionStore>,
    pub clock: Arc<ManualClock>,
    pub log: StatementLog,
    pub database: Box<dyn TestDatabase>,
}

impl Fixture {
    pub fn new(kind: Backend) -> Self {
        Fixture::with(kind, Setup::default())
    }

    pub fn with(kind: Backend, setup: Setup) -> Self {
        let (clock, log) = (Arc::new(ManualClock::new(start_time())), StatementLog::new());
        let database = kind.database(setup.pool_size);
        let store = open(kind, &*database, setup, Plans::Default, &clock, Some(log.factory()));
        Fixture { kind, store, clock, log, database }
    }

    /// Another store on the database, as a second process would open it (not counted).
    pub fn other_store(&self, pool_size: u32, plans: Plans) -> Arc<dyn TaskExecutionStore> {
        let clock = Arc::new(ManualClock::new(self.clock.now()));
        let setup = Setup { pool_size, lock_timeout: None };
        open(self.kind, &*self.database, setup, plans, &clock, None)
    }

    pub fn keeps_history(&self) -> bool {
        self.kind.history() == History::Kept
    }

    pub fn database_as<T: 'static>(&self) -> Option<&T> {
        self.database.as_any().downcast_ref::<T>()
    }

    /// Runs `;`-separated statements on the database outside the store.
    pub fn execute_sql(&self, sql: &str) {
        if let Err(err) = self.database.execute(sql) {
            panic!("{sql}: {err}");
        }
    }

    pub fn hold_lock_on(&self, id: uuid::Uuid) -> Box<dyn HeldLock> {
        self.database.hold_lock_on(id)
    }

    pub fn begins(&self) -> usize {
        self.log.total().sql.iter().filter(|sql| sql.starts_with("BEGIN")).count()
    }

    /// Whether a write waits for `held` (where unknown: a `BEGIN` sent since `begun`).
    pub fn waits_for(&self, held: &mut dyn HeldLock, begun: usize) -> bool {
        held.waiters().map_or_else(|| self.begins() > begun, |n| n > 0)
    }

    pub fn assert_intact(&self) {
        if let Err(problem) = self.database.check_integrity() {
            panic!("{}: the database is damaged: {problem}", self.kind);
        }
    }

    pub fn store(&self) -> &dyn TaskExecutionStore {
        &*self.store
    }

    /// The time the store writes now: the clock cut to microseconds.
    pub fn now(&self) -> DateTime<Utc> {
        to_micros(self.clock.now())
    }

    /// Moves the clock forward by 1.5 s and 1 ns (which the store must cut): the time it writes.
    pub fn tick(&self) -> DateTime<Utc> {
        self.clock.advance(TimeDelta::milliseconds(1_500) + TimeDelta::nanoseconds(1));
        self.now()
    }
}

fn open(
    kind: Backend,
    database: &dyn TestDatabase,
    Setup { pool_size, lock_timeout }: Setup,
    plans: Plans,
    clock: &Arc<ManualClock>,
    instrumentation: Option<Instrumentation>,
) -> Arc<dyn TaskExecutionStore> {
    let (clock, history) = (clock.clone(), kind.history());
    kind.open(
        database,
        &StoreSetup { pool_size, lock_timeout, plans, clock, instrumentation, history },
    )
}

impl fmt::Debug for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture").field("kind", &self.kind).finish_non_exhaustive()
    }
}

/// A case: its name in its group, and what runs it (panics on failure).
#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub run: fn(Backend),
}

pub type Group = (&'static str, &'static [Case]);

#[macro_export]
macro_rules! case {
    ($f:ident) => {
        $crate::suite::Case { name: stringify!($f), run: $f }
    };
}

/// A case of one backend's own, named `<backend>::<group>::<name>`: `(group, name, run)`.
pub type OwnCase = (&'static str, &'static str, fn());

#[macro_export]
macro_rules! own_cases {
    ($group:literal, $module:ident: $($case:ident),+ $(,)?) => {
        vec![$(($group, stringify!($case), $module::$case as fn())),+]
    };
}

/// A backend, its groups, its own cases, and why it cannot run here (its cases then ignored).
pub struct Run(pub Backend, pub Vec<Group>, pub Vec<OwnCase>, pub Option<String>);

/// Every case of every run as a trial `<backend>::<group>::<case>`, and the README's table
/// checked against every run's column; then stops any server the tests started.
pub fn main(runs: Vec<Run>) {
    let args = Arguments::from_args();
    let (mut trials, mut columns) = (Vec::new(), Vec::new());
    for Run(kind, groups, own, unavailable) in runs {
        if let Some(why) = &unavailable {
            eprintln!("{kind}: its cases are ignored: {why}");
        }
        let mut add = |group: &str, name: &str, test: Box<dyn FnOnce() + Send>| {
            let trial = Trial::test(format!("{kind}::{group}::{name}"), move || {
                test();
                Ok(())
            });
            trials.push(trial.with_ignored_flag(unavailable.is_some()));
        };
        for (group, cases) in groups {
            cases.iter().for_each(|case| add(group, case.name, Box::new(move || (case.run)(kind))));
        }
        own.into_iter().for_each(|(group, name, run)| add(group, name, Box::new(run)));
        columns.push((kind.title(), kind.statement_counts()));
    }
    trials.push(Trial::test("readme::statement_table", move || {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        crate::operations::check_readme_table(&readme, &columns).map_err(Failed::from)
    }));
    let conclusion = libtest_mimic::run(&args, trials);
    provision::postgres::shutdown();
    conclusion.exit();
}
