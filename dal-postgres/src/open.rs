//! Connecting a store: the connection pool and migrations.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dal_core::{Clock, DalError, History, Result, Store, SystemClock};
use dal_diesel::open::{InstrumentationFactory, Migrations, Setup, check_pool_size, pool};
use diesel::connection::CacheSize;
use diesel::{Connection, PgConnection};

use crate::migrations::{migrate, verify};
use crate::session;
use crate::statements::PgBackend;

/// A task-execution store on PostgreSQL.
pub type PgStore = Store<PgBackend>;

/// Connects a store to the PostgreSQL database at `url` (a libpq URL or key-value string) with
/// the default [`PgOptions`], applying pending migrations.
pub fn connect(url: impl Into<String>) -> Result<PgStore> {
    PgOptions::new(url).connect()
}

/// How to connect a PostgreSQL store.
#[derive(Clone)]
pub struct PgOptions {
    url: String,
    pool_size: u32,
    min_idle: Option<u32>,
    connect_timeout: Duration,
    clock: Arc<dyn Clock>,
    instrumentation: Option<InstrumentationFactory>,
    history: History,
    index_plans: bool,
    transaction_pooling: bool,
    migrations: Migrations,
}

/// What each of the store's sessions runs when it opens, with [`PgOptions::index_plans`] on.
pub const INDEX_PLANS: &str = "SET enable_seqscan = off; SET enable_bitmapscan = off";

/// The settings of [`INDEX_PLANS`] (name, value): what the store checks for behind a
/// transaction pooler, where they must be made on the server (`ALTER ROLE ... SET`).
pub const INDEX_PLAN_SETTINGS: [(&str, &str); 2] =
    [("enable_seqscan", "off"), ("enable_bitmapscan", "off")];

impl PgOptions {
    /// PgOptions for the database at `url`, e.g. `postgres://user@host:5432/db?sslmode=require`.
    /// Everything libpq accepts in a URL works (TLS, `options=-c statement_timeout=5s`,
    /// `search_path`, ...). Server settings asked for in `options` (or `PGOPTIONS`) are
    /// checked when the store connects: one that did not take effect (a connection pooler
    /// drops `options`) fails [`PgOptions::connect`] with [`DalError::Settings`] before anything
    /// is written. Behind a pooler, make them on the server (`ALTER ROLE ... SET`, `ALTER
    /// DATABASE ... SET`; README, "Running in production").
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            pool_size: 10,
            min_idle: None,
            connect_timeout: Duration::from_secs(10),
            clock: Arc::new(SystemClock),
            instrumentation: None,
            history: History::Kept,
            index_plans: true,
            transaction_pooling: false,
            migrations: Migrations::Apply,
        }
    }

    /// How many connections the pool may hold (default 10; at least 1).
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// How many idle connections the pool keeps open (default: `pool_size`, all opened at
    /// connect).
    pub fn min_idle(mut self, min_idle: u32) -> Self {
        self.min_idle = Some(min_idle);
        self
    }

    /// How long connecting, and an operation waiting for a free connection, may take before
    /// failing with [`DalError::Connection`] (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The clock the store reads time from (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whether the store's sessions plan every statement as the index scan it was written for
    /// (default: on). Each session runs [`INDEX_PLANS`] when it opens.
    ///
    /// Every statement of the DAL reads a partial index in the order it wants, or probes a
    /// key; none is meant to read a whole table (`count_by_status` aside, which then reads
    /// the primary key's index instead). PostgreSQL chooses otherwise when its statistics say
    /// the table is small: on a table created empty, until autovacuum's `ANALYZE` catches up
    /// (a minute or more), and for good with autovacuum off. A prepared statement's generic
    /// plan made then is kept; measured here, a generic `complete_many` planned on the empty
    /// table joined by hash over a sequential scan for the whole run, and custom claims read a
    /// thousand index entries each through a bitmap scan and a sort instead of stopping at
    /// their limit. With these two planner settings off for the DAL's own sessions, the plans
    /// are the index plans whatever the statistics, generic or custom.
    ///
    /// Behind a transaction-pooling proxy a session's settings do not stay with the client
    /// (and would leak into other clients' transactions): with
    /// [`PgOptions::transaction_pooling`] the store does not set them, but checks at connect that
    /// the server has them, and fails with [`DalError::Settings`] otherwise. Set them on the
    /// DAL's role (`ALTER ROLE dal SET enable_seqscan = off; ALTER ROLE dal SET
    /// enable_bitmapscan = off`) or database, or turn this option off.
    pub fn index_plans(mut self, on: bool) -> Self {
        self.index_plans = on;
        self
    }

    /// Whether the store works behind a transaction-pooling proxy (PgBouncer's `pool_mode =
    /// transaction`, or a managed equivalent), where each transaction of a client may run on
    /// another server session (default: off, a session per pooled connection).
    ///
    /// On, the store keeps nothing on a server session between its statements:
    /// - no statement is kept prepared by name (Diesel's statement cache is off): each one is
    ///   sent with its parameters as one unnamed statement (`PQsendQueryParams`), parsed and
    ///   planned for that execution;
    /// - its sessions run no `SET` ([`PgOptions::index_plans`]' settings must be made on the
    ///   server, and are checked at connect);
    /// - everything else already holds on any connection: each operation is one statement
    ///   (no operation opens a transaction of several statements), migrations
    ///   take a transaction-scoped advisory lock inside their one transaction, and no
    ///   temporary table, session advisory lock, `LISTEN` or cursor is used.
    ///
    /// Every operation stays one atomic statement. The cost is a parse and a plan per
    /// statement on the server (BENCHMARKS.md, "Transaction pooling", has the figures).
    pub fn transaction_pooling(mut self, on: bool) -> Self {
        self.transaction_pooling = on;
        self
    }

    /// Whether the store writes the execution history (default: [`History::Kept`]). With
    /// [`History::Off`] no write inserts events: for engines that keep no history, each write
    /// is then a little cheaper (see [`History`]).
    pub fn history(mut self, history: History) -> Self {
        self.history = history;
        self
    }

    /// What [`PgOptions::connect`] does about the schema's migrations (default:
    /// [`Migrations::Apply`]). With migrations run as a deployment step of their own
    /// ([`PgOptions::migrate`], by a role that may run DDL), [`Migrations::Verify`] lets the
    /// application run with a role that has only DML rights, and fails the connect with
    /// [`DalError::SchemaNotMigrated`] while the schema lacks one of this build's migrations.
    pub fn migrations(mut self, migrations: Migrations) -> Self {
        self.migrations = migrations;
        self
    }

    /// Diesel instrumentation to install on every connection of the pool.
    pub fn instrumentation(mut self, factory: InstrumentationFactory) -> Self {
        self.instrumentation = Some(factory);
        self
    }

    /// Opens one connection, checks its session (below), applies pending migrations on it in
    /// one transaction holding a transaction-scoped advisory lock (so processes connecting at
    /// once do not race, behind a transaction pooler too), or verifies them, or neither, as
    /// [`PgOptions::migrations`] says, then opens the pool.
    ///
    /// The session check, before anything is written: each server setting the URL's `options`
    /// (or `PGOPTIONS`) asks for has its value, a schema of the `search_path` exists, and with
    /// [`PgOptions::transaction_pooling`] and [`PgOptions::index_plans`] both on, the planner
    /// settings of [`INDEX_PLANS`] are set on the server. A few statements, on the first
    /// connection only.
    ///
    /// The first connection is made outside the pool, once: a connection the server refuses
    /// (no server at the address, an unknown role or database, a refused password) fails the
    /// call at once with that error, where the pool would try again and again until the connect
    /// timeout. libpq reports these failures as text only, so the store cannot tell one that
    /// may pass (a server still starting) from one that cannot; a caller that starts beside
    /// its server retries `connect` itself. Each connection attempt is bounded by the connect
    /// timeout (passed to libpq as `connect_timeout` unless the URL or `PGCONNECT_TIMEOUT`
    /// sets one).
    ///
    /// Errors: [`DalError::Validation`] for a pool size of 0, [`DalError::Connection`] when
    /// the first connection fails or the pool cannot open its connections within the connect
    /// timeout, [`DalError::Settings`] when the session is not as asked (nothing is written
    /// then), [`DalError::Migration`] when a migration fails, [`DalError::SchemaNotMigrated`]
    /// when verified migrations are missing.
    pub fn connect(self) -> Result<PgStore> {
        check_pool_size(self.pool_size)?;
        let url = with_connect_timeout(&self.url, self.connect_timeout);
        let mut first = self.first_connection(&url)?;
        match self.migrations {
            Migrations::Apply => drop(migrate(&mut first)?),
            Migrations::Verify => verify(&mut first)?,
            Migrations::Skip => {}
        }
        drop(first);
        let pooled = self.transaction_pooling;
        let setup = Setup {
            settings: (self.index_plans && !pooled).then(|| INDEX_PLANS.to_owned()),
            prepared_statements: !pooled,
            instrumentation: self.instrumentation,
        };
        // The backend retires a connection a statement found lost, and the pool opens a new one.
        let min_idle = self.min_idle;
        let pool = pool(&url, self.pool_size, self.connect_timeout, setup, |b| {
            b.min_idle(min_idle)
        })?;
        Ok(Store::new(PgBackend::new(pool), self.clock).with_history(self.history))
    }
}

impl PgOptions {
    /// Applies the pending migrations and returns their versions, oldest first (none when the
    /// schema is up to date), without opening a store: the migration step of a deployment
    /// that runs the application with [`Migrations::Verify`]. The same session check and the
    /// same locked transaction as [`PgOptions::connect`], on one connection, closed afterwards;
    /// [`crate::migrations_sql`] prints what it runs.
    ///
    /// Errors: those of [`PgOptions::connect`] (but the pool's).
    pub fn migrate(self) -> Result<Vec<String>> {
        let url = with_connect_timeout(&self.url, self.connect_timeout);
        let mut conn = self.first_connection(&url)?;
        migrate(&mut conn)
    }

    /// The first connection, made outside the pool, its session checked (see
    /// [`PgOptions::connect`]).
    fn first_connection(&self, url: &str) -> Result<PgConnection> {
        let mut first = PgConnection::establish(url).map_err(|e| DalError::Connection {
            source: Box::new(e),
        })?;
        if self.transaction_pooling {
            first.set_prepared_statement_cache_size(CacheSize::Disabled);
        }
        let planner: &[(&str, &str)] = if self.transaction_pooling && self.index_plans {
            &INDEX_PLAN_SETTINGS
        } else {
            &[]
        };
        session::check(&mut first, &session::requested_settings(url), planner)?;
        Ok(first)
    }
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("pool_size", &self.pool_size)
            .field("history", &self.history)
            .field("min_idle", &self.min_idle)
            .field("connect_timeout", &self.connect_timeout)
            .field("clock", &self.clock)
            .field("instrumentation", &self.instrumentation.is_some())
            .field("index_plans", &self.index_plans)
            .field("transaction_pooling", &self.transaction_pooling)
            .field("migrations", &self.migrations)
            .finish_non_exhaustive()
    }
}

/// `url` (a libpq URL or key-value string) with libpq's `connect_timeout` set to `timeout`
/// (whole seconds, at least 1), unless the URL or the environment (`PGCONNECT_TIMEOUT`) sets it.
fn with_connect_timeout(url: &str, timeout: Duration) -> String {
    if url.contains("connect_timeout") || std::env::var_os("PGCONNECT_TIMEOUT").is_some() {
        return url.to_owned();
    }
    let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}connect_timeout={seconds}")
    } else {
        format!("{url} connect_timeout={seconds}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_timeout_goes_to_libpq_unless_set() {
        if std::env::var_os("PGCONNECT_TIMEOUT").is_some() {
            return; // the environment's timeout is libpq's; nothing is added
        }
        let ten = Duration::from_secs(10);
        assert_eq!(
            with_connect_timeout("postgres://h/db", ten),
            "postgres://h/db?connect_timeout=10"
        );
        assert_eq!(
            with_connect_timeout(
                "postgres://h/db?sslmode=require",
                Duration::from_millis(1_500)
            ),
            "postgres://h/db?sslmode=require&connect_timeout=2"
        );
        assert_eq!(
            with_connect_timeout("host=h dbname=db", Duration::ZERO),
            "host=h dbname=db connect_timeout=1"
        );
        assert_eq!(
            with_connect_timeout("postgres://h/db?connect_timeout=3", ten),
            "postgres://h/db?connect_timeout=3"
        );
    }
}
