//! What opening a store is made of on either database: the pool, the setup of each of its
//! connections, and applying the embedded migrations.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use dal_core::{DalError, Result};
use diesel::Connection;
use diesel::backend::Backend;
use diesel::connection::{Instrumentation, SimpleConnection};
use diesel::r2d2::{
    self, ConnectionManager, CustomizeConnection, ManageConnection, Pool, R2D2Connection,
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

use crate::errors::from_diesel;

/// Makes the Diesel instrumentation installed on each new connection of the pool (for
/// statement counting, tracing or metrics).
pub type InstrumentationFactory = Arc<dyn Fn() -> Box<dyn Instrumentation> + Send + Sync>;

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
/// statements), then the instrumentation, so that a session's setup is not counted as one of
/// the store's operations.
pub struct Setup {
    /// Statements every session runs first, if any.
    pub settings: Option<String>,
    /// The instrumentation to install.
    pub instrumentation: Option<InstrumentationFactory>,
}

impl<C: Connection + SimpleConnection> CustomizeConnection<C, r2d2::Error> for Setup {
    fn on_acquire(&self, conn: &mut C) -> std::result::Result<(), r2d2::Error> {
        if let Some(settings) = &self.settings {
            conn.batch_execute(settings)
                .map_err(r2d2::Error::QueryError)?;
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
            .field("instrumentation", &self.instrumentation.is_some())
            .finish()
    }
}

/// A pool of up to `size` connections to `url`, each set up by `setup`, and waiting at most
/// `timeout` for a connection. A checkout costs no round trip (no `SELECT 1` before each use):
/// a lost connection is found by the statement that uses it, which fails with
/// [`DalError::Connection`] (retryable). `tune` adjusts the rest.
pub fn pool<C>(
    url: &str,
    size: u32,
    timeout: Duration,
    setup: Setup,
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
    .map_err(|e| DalError::Connection {
        source: Box::new(e),
    })
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

/// Applies the pending `migrations` on `conn`; the caller runs this inside the transaction
/// (and lock) that keeps processes starting at once from racing.
pub fn apply<C, DB>(
    conn: &mut C,
    migrations: EmbeddedMigrations,
) -> std::result::Result<(), MigrateError>
where
    DB: Backend,
    C: MigrationHarness<DB>,
{
    conn.run_pending_migrations(migrations)
        .map(drop)
        .map_err(MigrateError::Harness)
}
