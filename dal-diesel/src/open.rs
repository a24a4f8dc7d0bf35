//! What opening a store is made of on either database: the options both share, the pool, the
//! setup of each of its connections, and applying or verifying the embedded migrations.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dal_core::{Clock, DalError, History, Result, SystemClock};
use diesel::Connection;
use diesel::backend::Backend;
use diesel::connection::{CacheSize, Instrumentation, SimpleConnection};
use diesel::r2d2::{
    self, ConnectionManager, CustomizeConnection, ManageConnection, Pool, R2D2Connection,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

use crate::errors::from_diesel;

/// Makes the Diesel instrumentation installed on each new connection of the pool (for
/// statement counting, tracing or metrics).
pub type InstrumentationFactory = Arc<dyn Fn() -> Box<dyn Instrumentation> + Send + Sync>;

/// The options of a store that both backends have, set with the methods
/// [`common_options!`](crate::common_options) gives each backend's builder.
#[derive(Clone)]
pub struct Common {
    /// The pool's size.
    pub pool_size: u32,
    /// How long connecting, or waiting for a free connection, may take.
    pub connect_timeout: Duration,
    /// The store's clock.
    pub clock: Arc<dyn Clock>,
    /// Diesel instrumentation for each connection.
    pub instrumentation: Option<InstrumentationFactory>,
    /// Whether the store writes the history.
    pub history: History,
    /// What opening does about the migrations.
    pub migrations: Migrations,
    /// How often waiters look for other processes' work without a signal (`None`: the
    /// backend's default).
    pub wake_interval: Option<Duration>,
}

impl Common {
    /// The defaults, with the backend's pool size and timeout.
    pub fn new(pool_size: u32, connect_timeout: Duration) -> Self {
        Common {
            pool_size,
            connect_timeout,
            clock: Arc::new(SystemClock),
            instrumentation: None,
            history: History::Kept,
            migrations: Migrations::Apply,
            wake_interval: None,
        }
    }

    /// The setup of the pool's connections.
    pub fn setup(&self, settings: Option<String>, prepared_statements: bool) -> Setup {
        Setup { settings, prepared_statements, instrumentation: self.instrumentation.clone() }
    }
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Common")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("clock", &self.clock)
            .field("instrumentation", &self.instrumentation.is_some())
            .field("history", &self.history)
            .field("migrations", &self.migrations)
            .field("wake_interval", &self.wake_interval)
            .finish()
    }
}

/// The setters of the options both backends have, for a builder with a field `common`
/// ([`Common`]).
#[macro_export]
macro_rules! common_options {
    () => {
        /// How many connections the pool holds (at least 1).
        pub fn pool_size(mut self, size: u32) -> Self {
            self.common.pool_size = size;
            self
        }

        /// How long connecting, and an operation waiting for a free connection, may take
        /// before failing with `DalError::Connection`.
        pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.common.connect_timeout = timeout;
            self
        }

        /// The clock the store reads time from (default: the system clock).
        pub fn clock(mut self, clock: std::sync::Arc<dyn dal_core::Clock>) -> Self {
            self.common.clock = clock;
            self
        }

        /// Whether the store writes the execution history (default: `History::Kept`).
        pub fn history(mut self, history: dal_core::History) -> Self {
            self.common.history = history;
            self
        }

        /// What opening does about the schema's migrations (default: `Migrations::Apply`).
        /// With the migrations applied as a step of their own (`migrate`, by a role that
        /// may run DDL), `Migrations::Verify` opens with a role that has DML rights only, and
        /// fails with `DalError::SchemaNotMigrated` while a migration of this build is missing.
        pub fn migrations(mut self, migrations: $crate::open::Migrations) -> Self {
            self.common.migrations = migrations;
            self
        }

        /// How often runners waiting for work look for other processes' writes where no
        /// signal tells them (at least 1 ms; `dal_core::WakeSource` says which applies):
        /// PostgreSQL wakes waiters this often behind a transaction pooler and while its
        /// listening connection is down (default 250 ms); SQLite reads the file's change
        /// counter this often while runners wait (default 25 ms).
        pub fn wake_interval(mut self, every: std::time::Duration) -> Self {
            self.common.wake_interval = Some(every.max(std::time::Duration::from_millis(1)));
            self
        }

        /// Diesel instrumentation to install on every connection of the pool (statement
        /// counting, tracing, metrics).
        pub fn instrumentation(mut self, factory: $crate::open::InstrumentationFactory) -> Self {
            self.common.instrumentation = Some(factory);
            self
        }
    };
}

/// Fails with [`DalError::Validation`] for a pool of no connections.
pub fn check_pool_size(size: u32) -> Result<()> {
    dal_core::validate::in_range(
        "pool_size",
        i32::try_from(size).unwrap_or(i32::MAX),
        1,
        i32::MAX,
    )?;
    Ok(())
}

/// What runs on every new connection of the pool: the database's settings (one batch of
/// statements), the statement cache's size, then the instrumentation, so that a session's
/// setup is not counted as one of the store's operations.
pub struct Setup {
    /// Statements every session runs first, if any.
    pub settings: Option<String>,
    /// Whether Diesel keeps statements prepared on the connection (its statement cache; on by
    /// default). Off, every statement is sent with its parameters as an unnamed statement,
    /// parsed and planned for that execution alone: nothing named outlives it on the server
    /// session, as a transaction-pooling proxy requires.
    pub prepared_statements: bool,
    /// The instrumentation to install.
    pub instrumentation: Option<InstrumentationFactory>,
}

impl<C: Connection + SimpleConnection> CustomizeConnection<C, r2d2::Error> for Setup {
    fn on_acquire(&self, conn: &mut C) -> std::result::Result<(), r2d2::Error> {
        if let Some(settings) = &self.settings {
            conn.batch_execute(settings).map_err(r2d2::Error::QueryError)?;
        }
        if !self.prepared_statements {
            conn.set_prepared_statement_cache_size(CacheSize::Disabled);
        }
        if let Some(factory) = &self.instrumentation {
            conn.set_instrumentation(factory());
        }
        Ok(())
    }
}

impl fmt::Debug for Setup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Setup")
            .field("settings", &self.settings)
            .field("prepared_statements", &self.prepared_statements)
            .field("instrumentation", &self.instrumentation.is_some())
            .finish()
    }
}

/// A pool of up to `size` connections to `url`, each set up by `setup` (a [`Setup`], or a
/// backend's customizer around one), and waiting at most
/// `timeout` for a connection. A checkout costs no round trip (no `SELECT 1` before each use):
/// a lost connection is found by the statement that uses it, which fails with
/// [`DalError::Connection`] (retryable). `tune` adjusts the rest.
pub fn pool<C>(
    url: &str,
    size: u32,
    timeout: Duration,
    setup: impl CustomizeConnection<C, r2d2::Error> + 'static,
    tune: impl FnOnce(r2d2::Builder<ConnectionManager<C>>) -> r2d2::Builder<ConnectionManager<C>>,
) -> Result<Pool<ConnectionManager<C>>>
where
    C: R2D2Connection + SimpleConnection + Send + 'static,
    ConnectionManager<C>: ManageConnection<Connection = C, Error = r2d2::Error>,
{
    tune(
        Pool::builder()
            .max_size(size)
            .test_on_check_out(false)
            .connection_timeout(timeout)
            .connection_customizer(Box::new(setup)),
    )
    .build(ConnectionManager::new(url))
    .map_err(|e| DalError::Connection { source: Box::new(e) })
}

/// A failure while migrating: a statement's, or the migration harness's.
#[derive(Debug)]
pub enum MigrateError {
    /// A statement around the migrations (the lock, the transaction).
    Diesel(diesel::result::Error),
    /// A migration.
    Harness(dal_core::error::BoxError),
}

impl From<diesel::result::Error> for MigrateError {
    fn from(err: diesel::result::Error) -> Self {
        MigrateError::Diesel(err)
    }
}

impl From<MigrateError> for DalError {
    fn from(err: MigrateError) -> Self {
        match err {
            MigrateError::Diesel(err) => from_diesel(err),
            MigrateError::Harness(source) => DalError::Migration { source },
        }
    }
}

/// Applies the pending `migrations` on `conn` and returns the versions applied, oldest first;
/// the caller runs this inside the transaction (and lock) that keeps processes starting at
/// once from racing.
pub fn apply<C, DB>(
    conn: &mut C,
    migrations: EmbeddedMigrations,
) -> std::result::Result<Vec<String>, MigrateError>
where
    DB: Backend,
    C: MigrationHarness<DB>,
{
    conn.run_pending_migrations(migrations)
        .map(|applied| applied.iter().map(ToString::to_string).collect())
        .map_err(MigrateError::Harness)
}

/// What opening a store does about the schema's migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Migrations {
    /// Apply the pending migrations (the default): in one transaction holding a lock, so that
    /// processes starting at once do not race. Needs a role that may run DDL.
    #[default]
    Apply,
    /// Apply none; check with two `SELECT`s that every migration of this build is applied, and
    /// fail with [`DalError::SchemaNotMigrated`] otherwise: for a role with DML rights only,
    /// once the migrations ran as a separate step (`migrate`). Newer migrations are accepted.
    Verify,
    /// Neither apply nor check: the schema is someone else's concern.
    Skip,
}

/// The name of Diesel's table of applied migrations.
pub const MIGRATIONS_TABLE: &str = "__diesel_schema_migrations";

/// The versions of `migrations`, oldest first.
pub fn versions<DB: Backend>(migrations: &EmbeddedMigrations) -> Result<Vec<String>>
where
    EmbeddedMigrations: diesel::migration::MigrationSource<DB>,
{
    let list = diesel::migration::MigrationSource::<DB>::migrations(migrations)
        .map_err(|source| DalError::Migration { source })?;
    Ok(list.iter().map(|m| m.name().version().to_string()).collect())
}

/// Fails with [`DalError::SchemaNotMigrated`] when one of `needed` is not among `applied`
/// (`None`: the schema has no table of applied migrations).
pub fn check_applied(needed: Vec<String>, applied: Option<Vec<String>>) -> Result<()> {
    let applied = applied.unwrap_or_default();
    let pending: Vec<String> =
        needed.into_iter().filter(|version| !applied.contains(version)).collect();
    if pending.is_empty() { Ok(()) } else { Err(DalError::SchemaNotMigrated { pending }) }
}

#[derive(diesel::QueryableByName)]
struct Present {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    present: bool,
}

#[derive(diesel::QueryableByName)]
struct Applied {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

/// The versions applied on `conn` (`None` when it has no [`MIGRATIONS_TABLE`]), read with
/// two `SELECT`s: `table_exists`, the dialect's query of one row whose boolean column
/// `present` says whether the table exists, then the table. Reads only.
pub fn applied<C>(conn: &mut C, table_exists: &'static str) -> Result<Option<Vec<String>>>
where
    C: diesel::connection::LoadConnection,
    C::Backend: Backend + 'static,
    bool: diesel::deserialize::FromSql<diesel::sql_types::Bool, C::Backend>,
    String: diesel::deserialize::FromSql<diesel::sql_types::Text, C::Backend>,
    diesel::query_builder::SqlQuery: diesel::query_builder::QueryFragment<C::Backend>,
{
    use diesel::RunQueryDsl;
    let found: Present = diesel::sql_query(table_exists).get_result(conn).map_err(from_diesel)?;
    if !found.present {
        return Ok(None);
    }
    let rows: Vec<Applied> = diesel::sql_query(format!("SELECT version FROM {MIGRATIONS_TABLE}"))
        .load(conn)
        .map_err(from_diesel)?;
    Ok(Some(rows.into_iter().map(|r| r.version).collect()))
}
