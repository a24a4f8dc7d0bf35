//! A fresh store on a fresh database, with a manual clock and a statement counter.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::Clock;
use dal_core::clock::to_micros;
use dal_core::{History, ManualClock, TaskExecutionStore};

use crate::backend::{Backend, HeldLock, Plans, StoreSetup, TestDatabase};
use crate::counter::StatementLog;

/// How a fixture's store is opened.
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
        Setup {
            pool_size: 8,
            lock_timeout: None,
        }
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
        Fixture {
            kind,
            store,
            clock,
            log,
            database,
        }
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
        self.log
            .total()
            .sql
            .iter()
            .filter(|sql| sql.starts_with("BEGIN"))
            .count()
    }

    /// Whether a write of the store now waits for `held`: PostgreSQL tells who waits for the
    /// row; on SQLite, the store has sent a `BEGIN` since it had sent `begun` (its `BEGIN
    /// IMMEDIATE` is what waits).
    pub fn waits_for(&self, held: &mut dyn HeldLock, begun: usize) -> bool {
        held.waiters()
            .map_or_else(|| self.begins() > begun, |n| n > 0)
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
        self.clock
            .advance(TimeDelta::milliseconds(1_500) + TimeDelta::nanoseconds(1));
        self.now()
    }
}

impl fmt::Debug for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}
