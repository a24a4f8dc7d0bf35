//! A fresh store on a fresh database, with a manual clock and a statement counter.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::Clock;
use dal_core::clock::to_micros;
use dal_core::{ManualClock, TaskExecutionStore};

use crate::counter::StatementLog;
use crate::provision::postgres::{ConnectionPermit, TempSchema, reserve_connections};
use crate::provision::sqlite::TempDatabase;

/// The backends the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// `dal-postgres`.
    Postgres,
    /// `dal-sqlite`.
    Sqlite,
}

impl BackendKind {
    /// Every backend.
    pub const ALL: [BackendKind; 2] = [BackendKind::Postgres, BackendKind::Sqlite];

    /// The name used in test names: `postgres`, `sqlite`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Postgres => "postgres",
            BackendKind::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a fixture's store is opened.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// The pool size.
    pub pool_size: u32,
    /// SQLite: how long a write waits for another connection's lock.
    pub busy_timeout: std::time::Duration,
    /// PostgreSQL: server settings for the store's sessions, e.g. `-c statement_timeout=200`.
    pub postgres_options: &'static str,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            pool_size: 8,
            busy_timeout: std::time::Duration::from_secs(5),
            postgres_options: "",
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
    pub kind: BackendKind,
    /// The store, shareable with threads.
    pub store: Arc<dyn TaskExecutionStore>,
    /// The store's clock.
    pub clock: Arc<ManualClock>,
    /// Every statement the store's connections sent.
    pub log: StatementLog,
    // Dropped after the store: the database outlives its connections.
    database: Database,
    // PostgreSQL: the connections reserved for the stores of `other_store`.
    permits: std::sync::Mutex<Vec<ConnectionPermit>>,
}

/// A lock held by another connection (see [`Fixture::hold_lock_on`]).
pub enum LockHolder {
    /// A PostgreSQL connection in a transaction holding a row lock.
    Postgres(diesel::PgConnection),
    /// A SQLite connection holding the write lock.
    Sqlite(diesel::SqliteConnection),
}

impl fmt::Debug for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockHolder::Postgres(_) => "LockHolder::Postgres",
            LockHolder::Sqlite(_) => "LockHolder::Sqlite",
        })
    }
}

enum Database {
    Postgres(TempSchema),
    Sqlite(TempDatabase),
}

impl Fixture {
    /// A fixture with the default [`Setup`].
    pub fn new(kind: BackendKind) -> Self {
        Fixture::with(kind, Setup::default())
    }

    /// A fixture opened with `setup`.
    pub fn with(kind: BackendKind, setup: Setup) -> Self {
        let clock = Arc::new(ManualClock::new(start_time()));
        let log = StatementLog::new();
        let (store, database): (Arc<dyn TaskExecutionStore>, Database) = match kind {
            BackendKind::Postgres => {
                let schema = TempSchema::with_connections(setup.pool_size);
                let url = schema.url_with_options(setup.postgres_options);
                // All connections are opened up front, none later in the background.
                let store = dal_postgres::Options::new(url)
                    .pool_size(setup.pool_size)
                    .clock(clock.clone())
                    .instrumentation(log.factory())
                    .connect()
                    .expect("connect a PostgreSQL store to a test schema");
                (Arc::new(store), Database::Postgres(schema))
            }
            BackendKind::Sqlite => {
                let file = TempDatabase::new();
                let store = file.open(|options| {
                    options
                        .pool_size(setup.pool_size)
                        .busy_timeout(setup.busy_timeout)
                        .clock(clock.clone())
                        .instrumentation(log.factory())
                });
                (Arc::new(store), Database::Sqlite(file))
            }
        };
        Fixture {
            kind,
            store,
            clock,
            log,
            database,
            permits: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Another store on the fixture's database, with a pool and a clock of its own and no
    /// statement counting, as a second process would open it; on PostgreSQL its sessions get
    /// `postgres_options` (e.g. `-c plan_cache_mode=force_custom_plan`).
    pub fn other_store(
        &self,
        pool_size: u32,
        postgres_options: &str,
    ) -> Arc<dyn TaskExecutionStore> {
        let clock = Arc::new(ManualClock::new(self.clock.now()));
        match &self.database {
            Database::Postgres(schema) => {
                self.permits
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(reserve_connections(pool_size));
                Arc::new(
                    dal_postgres::Options::new(schema.url_with_options(postgres_options))
                        .pool_size(pool_size)
                        .clock(clock)
                        .connect()
                        .expect("connect a second PostgreSQL store to the test schema"),
                )
            }
            Database::Sqlite(file) => {
                Arc::new(file.open(|options| options.pool_size(pool_size).clock(clock)))
            }
        }
    }

    /// The PostgreSQL schema of the fixture, if it is a PostgreSQL one.
    pub fn postgres_schema(&self) -> Option<&TempSchema> {
        match &self.database {
            Database::Postgres(schema) => Some(schema),
            Database::Sqlite(_) => None,
        }
    }

    /// The SQLite database of the fixture, if it is a SQLite one.
    pub fn sqlite_database(&self) -> Option<&TempDatabase> {
        match &self.database {
            Database::Sqlite(file) => Some(file),
            Database::Postgres(_) => None,
        }
    }

    /// Runs statements (`;`-separated) on the fixture's database outside the store, over a connection of its
    /// own: `postgres` on PostgreSQL, `sqlite` on SQLite. For cases that change the schema
    /// under the store (e.g. to make a write fail).
    pub fn execute_sql(&self, postgres: &str, sqlite: &str) {
        if let Err(err) = self.try_execute_sql(postgres, sqlite) {
            panic!("{postgres} / {sqlite}: {err}");
        }
    }

    /// [`Fixture::execute_sql`], returning the database's error instead of failing the case.
    pub fn try_execute_sql(&self, postgres: &str, sqlite: &str) -> diesel::QueryResult<()> {
        use diesel::connection::SimpleConnection;
        use diesel::{Connection, PgConnection, SqliteConnection};
        match &self.database {
            Database::Postgres(schema) => {
                let mut conn = PgConnection::establish(schema.url()).expect("connect");
                conn.batch_execute(postgres)
            }
            Database::Sqlite(file) => {
                let path = file.path();
                let mut conn = SqliteConnection::establish(&path.to_string_lossy()).expect("open");
                conn.batch_execute(sqlite)
            }
        }
    }

    /// Another connection holding a lock the store needs to change task `id`: on PostgreSQL
    /// the task's row lock (`SELECT ... FOR UPDATE` in an open transaction), on SQLite the
    /// database's write lock (`BEGIN IMMEDIATE`). Released when the guard drops.
    pub fn hold_lock_on(&self, id: uuid::Uuid) -> LockHolder {
        use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};
        match &self.database {
            Database::Postgres(schema) => {
                let mut conn = PgConnection::establish(schema.url()).expect("connect");
                diesel::sql_query("BEGIN")
                    .execute(&mut conn)
                    .expect("BEGIN");
                diesel::sql_query("SELECT 1 FROM task_executions WHERE id = $1 FOR UPDATE")
                    .bind::<diesel::sql_types::Uuid, _>(id)
                    .execute(&mut conn)
                    .expect("lock the row");
                LockHolder::Postgres(conn)
            }
            Database::Sqlite(file) => {
                let mut conn =
                    SqliteConnection::establish(&file.path().to_string_lossy()).expect("open");
                diesel::sql_query("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .expect("lock");
                LockHolder::Sqlite(conn)
            }
        }
    }

    /// `PRAGMA integrity_check` of the SQLite fixture's file (`"ok"` when intact).
    pub fn sqlite_integrity(&self) -> String {
        use diesel::{Connection, RunQueryDsl, SqliteConnection};
        #[derive(diesel::QueryableByName)]
        struct Check {
            #[diesel(sql_type = diesel::sql_types::Text)]
            integrity_check: String,
        }
        let file = self.sqlite_database().expect("a SQLite fixture");
        let mut conn = SqliteConnection::establish(&file.path().to_string_lossy()).expect("open");
        let rows: Vec<Check> = diesel::sql_query("PRAGMA integrity_check")
            .load(&mut conn)
            .expect("integrity_check");
        rows.into_iter()
            .map(|r| r.integrity_check)
            .collect::<Vec<_>>()
            .join("; ")
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
