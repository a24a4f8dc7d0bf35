//! Connecting a store: the connection pool and migrations.

use std::fmt;
use std::time::Duration;

use dal_core::{DalError, Result, Store};
use dal_diesel::errors::from_diesel;
use dal_diesel::open::{Common, Migrations, check_pool_size, pool};
use diesel::connection::CacheSize;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};
use diesel::{Connection, PgConnection};

use crate::backend::PgBackend;
use crate::listen::{self, Listen};
use crate::migrations::{migrate, verify};
use crate::session;

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
    common: Common,
    min_idle: Option<u32>,
    index_plans: bool,
    transaction_pooling: bool,
}

/// How often runners waiting for work wake where no notification can reach them (behind a
/// transaction pooler, and while the listening connection is down), by default.
pub const WAKE_INTERVAL: Duration = Duration::from_millis(250);

/// What each of the store's sessions runs when it opens, with [`PgOptions::index_plans`] on.
pub const INDEX_PLANS: &str = "SET enable_seqscan = off; SET enable_bitmapscan = off";

/// The settings of [`INDEX_PLANS`] (name, value): what the store checks for behind a
/// transaction pooler, where they must be made on the server (`ALTER ROLE ... SET`).
pub const INDEX_PLAN_SETTINGS: [(&str, &str); 2] =
    [("enable_seqscan", "off"), ("enable_bitmapscan", "off")];

impl PgOptions {
    /// Options for the database at `url`, e.g. `postgres://user@host:5432/db?sslmode=require`:
    /// anything libpq accepts (TLS, `options=-c statement_timeout=5s`, ...). A setting asked
    /// for in `options` (or `PGOPTIONS`) that did not take effect (a pooler drops `options`)
    /// fails [`PgOptions::connect`] with [`DalError::Settings`] before anything is written.
    pub fn new(url: impl Into<String>) -> Self {
        PgOptions {
            url: url.into(),
            common: Common::new(10, Duration::from_secs(10)),
            min_idle: None,
            index_plans: true,
            transaction_pooling: false,
        }
    }

    dal_diesel::common_options!();

    /// How many idle connections the pool keeps open (default: all of them, opened at
    /// connect).
    pub fn min_idle(mut self, min_idle: u32) -> Self {
        self.min_idle = Some(min_idle);
        self
    }

    /// Whether the store's sessions plan every statement as the index scan it was written for
    /// (default: on): each session runs [`INDEX_PLANS`] when it opens, lest a table that looks
    /// small gets a sequential scan as its generic plan for good. Behind a transaction pooler
    /// they must be set on the server (`ALTER ROLE ... SET`), checked at connect
    /// ([`DalError::Settings`] otherwise).
    pub fn index_plans(mut self, on: bool) -> Self {
        self.index_plans = on;
        self
    }

    /// Whether the store works behind a transaction-pooling proxy (PgBouncer's `pool_mode =
    /// transaction`), where each transaction may run on another server session (default:
    /// off). On, nothing is kept on a session between statements: no statement is kept
    /// prepared (each is parsed and planned for its execution), and its sessions run no `SET`.
    /// Every operation is still one atomic statement.
    pub fn transaction_pooling(mut self, on: bool) -> Self {
        self.transaction_pooling = on;
        self
    }

    /// Opens the store: a first connection outside the pool (a refused one fails at once), its
    /// session checked before anything is written (the settings asked for took effect, a
    /// `search_path` schema exists, [`INDEX_PLANS`] set on the server behind a transaction
    /// pooler), migrations applied under a transaction-scoped advisory lock (or as
    /// [`PgOptions::migrations`] says), then the pool. The connect timeout goes to libpq as
    /// `connect_timeout` unless the URL or `PGCONNECT_TIMEOUT` sets one.
    ///
    /// Errors: [`DalError::Validation`] (pool size 0), [`DalError::Connection`],
    /// [`DalError::Settings`], [`DalError::Migration`], [`DalError::SchemaNotMigrated`].
    pub fn connect(self) -> Result<PgStore> {
        let common = &self.common;
        check_pool_size(common.pool_size)?;
        let url = with_connect_timeout(&self.url, common.connect_timeout);
        let mut first = self.first_connection(&url)?;
        match common.migrations {
            Migrations::Apply => drop(migrate(&mut first)?),
            Migrations::Verify => verify(&mut first)?,
            Migrations::Skip => {}
        }
        let schema = diesel::select(diesel::dsl::sql::<Nullable<Text>>("current_schema()"))
            .get_result::<Option<String>>(&mut first)
            .map_err(from_diesel)?;
        drop(first);
        let pooled = self.transaction_pooling;
        let fallback = common.wake_interval.unwrap_or(WAKE_INTERVAL);
        if pooled {
            tracing::warn!(every = ?fallback, "behind a transaction pooler LISTEN is not available: runners waiting for work wake at this interval");
        }
        let listen = Listen {
            url: (!pooled).then(|| url.clone()),
            channel: listen::channel(schema.as_deref()),
            token: listen::token(),
            fallback,
        };
        let setup =
            common.setup((self.index_plans && !pooled).then(|| INDEX_PLANS.to_owned()), !pooled);
        // The backend retires a connection a statement found lost, and the pool opens a new one.
        let min_idle = self.min_idle;
        let pool =
            pool(&url, common.pool_size, common.connect_timeout, setup, |b| b.min_idle(min_idle))?;
        Ok(Store::new(PgBackend::new(pool, listen), common.clock.clone())
            .with_history(common.history))
    }

    /// Applies the pending migrations and returns their versions, oldest first (none when the
    /// schema is up to date), without opening a store: the migration step of a deployment
    /// that runs the application with [`Migrations::Verify`]. The same session check and the
    /// same locked transaction as [`PgOptions::connect`], on one connection, closed afterwards;
    /// [`crate::migrations_sql`] prints what it runs.
    ///
    /// Errors: those of [`PgOptions::connect`] (but the pool's).
    pub fn migrate(self) -> Result<Vec<String>> {
        let url = with_connect_timeout(&self.url, self.common.connect_timeout);
        let mut conn = self.first_connection(&url)?;
        migrate(&mut conn)
    }

    /// The first connection, made outside the pool, its session checked (see
    /// [`PgOptions::connect`]).
    fn first_connection(&self, url: &str) -> Result<PgConnection> {
        let mut first = PgConnection::establish(url)
            .map_err(|e| DalError::Connection { source: Box::new(e) })?;
        if self.transaction_pooling {
            first.set_prepared_statement_cache_size(CacheSize::Disabled);
        }
        let planner: &[(&str, &str)] =
            if self.transaction_pooling && self.index_plans { &INDEX_PLAN_SETTINGS } else { &[] };
        session::check(&mut first, &session::requested_settings(url), planner)?;
        Ok(first)
    }
}

impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field("common", &self.common)
            .field("min_idle", &self.min_idle)
            .field("index_plans", &self.index_plans)
            .field("transaction_pooling", &self.transaction_pooling)
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
            with_connect_timeout("postgres://h/db?sslmode=require", Duration::from_millis(1_500)),
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
