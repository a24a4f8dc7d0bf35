//! Opening a store: the connection pool, per-connection settings and migrations.

use std::fmt;
use std::time::Duration;

use dal_core::{DalError, Result, Store};
use dal_diesel::errors::from_pool;
use dal_diesel::open::{
    Common, MigrateError, Migrations, Setup, applied, apply, check_applied, check_pool_size, pool,
    versions,
};
use diesel::connection::SimpleConnection;
use diesel::r2d2::{self, CustomizeConnection};
use diesel::{Connection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

use crate::backend::SqliteBackend;
use crate::errors::{from_diesel, wait_when_busy};
use crate::watch::read_only;

/// The schema migrations, embedded in the binary and applied by [`SqliteOptions::open`].
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// A task-execution store on SQLite.
pub type SqliteStore = Store<SqliteBackend>;

/// Opens a store on the SQLite database at `path` (created if missing) with the default
/// [`SqliteOptions`], applying pending migrations.
pub fn open(path: impl Into<String>) -> Result<SqliteStore> {
    SqliteOptions::new(path).open()
}

/// How SQLite makes a commit durable (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `NORMAL` (the default): in WAL mode a commit is not synced to disk at once; a power
    /// loss may lose the last commits, never the database's consistency.
    #[default]
    Normal,
    /// `FULL`: every commit is synced before it returns.
    Full,
}

/// How to open a SQLite store.
#[derive(Clone)]
pub struct SqliteOptions {
    path: String,
    common: Common,
    busy_timeout: Duration,
    synchronous: Synchronous,
}

impl SqliteOptions {
    /// Options for the database at `path`: a file path, or a `file:` URI. `:memory:` gives a
    /// private in-memory database, which the store then serves over a single connection.
    /// Defaults: a pool of 8 (writes take turns, reads run in parallel), a connect timeout of
    /// 30 s.
    pub fn new(path: impl Into<String>) -> Self {
        SqliteOptions {
            path: path.into(),
            common: Common::new(8, Duration::from_secs(30)),
            busy_timeout: Duration::from_secs(5),
            synchronous: Synchronous::Normal,
        }
    }

    dal_diesel::common_options!();

    /// How long a write waits for another process's lock before failing with
    /// [`DalError::Busy`] (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The durability of commits (default [`Synchronous::Normal`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Opens the database, sets every connection up (WAL, `busy_timeout`, `foreign_keys`,
    /// `synchronous`) and applies pending migrations in one `BEGIN IMMEDIATE` transaction, so
    /// processes opening the same file at once do not race. They run on a first connection
    /// outside the pool, so a path that cannot be opened fails at once, not at the checkout
    /// timeout. With [`Migrations::Verify`] the file is opened read-only (a missing file is not
    /// created) and nothing is written before the check passes.
    ///
    /// Errors: [`DalError::Validation`] (pool size 0), [`DalError::Connection`] (cannot open;
    /// verified: missing), [`DalError::Database`] (not a database), [`DalError::Migration`],
    /// [`DalError::SchemaNotMigrated`].
    pub fn open(self) -> Result<SqliteStore> {
        let common = &self.common;
        let migrations = common.migrations;
        check_pool_size(common.pool_size)?;
        let in_memory = self.path == ":memory:" || self.path.contains("mode=memory");
        let synchronous = match self.synchronous {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        };
        let pragmas = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; \
             PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536;"
        );
        if !in_memory {
            let mut first = if migrations == Migrations::Verify {
                // Verified, the file is read and nothing is written: not created, not set up.
                read_only(&self.path)?
            } else {
                let mut first = establish(&self.path)?;
                first.batch_execute(&pragmas).map_err(from_diesel)?;
                first
            };
            wait_when_busy(&mut first, self.busy_timeout);
            run(migrations, &mut first)?;
        }
        let setup = Busy { setup: common.setup(Some(pragmas), true), timeout: self.busy_timeout };
        // An in-memory database lives as long as its one connection.
        let size = if in_memory { 1 } else { common.pool_size };
        let pool = pool(&self.path, size, common.connect_timeout, setup, |b| {
            b.max_lifetime(None).idle_timeout(None)
        })?;
        if in_memory {
            // The database is the pool's one connection: migrated there.
            run(migrations, &mut *pool.get().map_err(from_pool)?)?;
        }
        let every = common.wake_interval.unwrap_or(WAKE_INTERVAL);
        let watched = (!in_memory).then(|| (self.path.clone(), every));
        let backend = SqliteBackend::new(pool, watched);
        Ok(Store::new(backend, common.clock.clone()).with_history(common.history))
    }

    /// Applies the pending migrations and returns their versions, oldest first (none when the
    /// file is up to date), without opening a store: the migration step of a deployment that
    /// opens the store with [`Migrations::Verify`]. One connection, set up as the pool's, and
    /// the same `BEGIN IMMEDIATE` transaction as [`SqliteOptions::open`].
    ///
    /// Errors: those of [`SqliteOptions::open`].
    pub fn migrate(self) -> Result<Vec<String>> {
        let mut conn = establish(&self.path)?;
        conn.batch_execute("PRAGMA foreign_keys = ON;").map_err(from_diesel)?;
        wait_when_busy(&mut conn, self.busy_timeout);
        migrate(&mut conn)
    }
}

/// How often the file's change counter is read while runners wait, by default.
pub const WAKE_INTERVAL: Duration = Duration::from_millis(25);

/// A connection to `path`, creating the file if it is missing.
fn establish(path: &str) -> Result<SqliteConnection> {
    SqliteConnection::establish(path).map_err(|e| DalError::Connection { source: Box::new(e) })
}

/// The pool's customizer: the shared setup, then the busy handler (SQLite's `busy_timeout`
/// pragma would replace it).
#[derive(Debug)]
struct Busy {
    setup: Setup,
    timeout: Duration,
}

impl CustomizeConnection<SqliteConnection, r2d2::Error> for Busy {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> std::result::Result<(), r2d2::Error> {
        self.setup.on_acquire(conn)?;
        wait_when_busy(conn, self.timeout);
        Ok(())
    }
}

impl fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteOptions")
            .field("path", &self.path)
            .field("common", &self.common)
            .field("busy_timeout", &self.busy_timeout)
            .field("synchronous", &self.synchronous)
            .finish()
    }
}

/// Applies the pending migrations in one `BEGIN IMMEDIATE` transaction; returns their versions.
fn migrate(conn: &mut SqliteConnection) -> Result<Vec<String>> {
    conn.immediate_transaction(|conn| apply(conn, MIGRATIONS)).map_err(
        |err: MigrateError| match err {
            MigrateError::Diesel(err) => from_diesel(err),
            err => err.into(),
        },
    )
}

/// Does what `migrations` says on `conn`.
fn run(migrations: Migrations, conn: &mut SqliteConnection) -> Result<()> {
    match migrations {
        Migrations::Apply => migrate(conn).map(drop),
        Migrations::Verify => {
            let present = applied(
                conn,
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' \
                 AND name = '__diesel_schema_migrations') AS present",
            )?;
            check_applied(versions::<diesel::sqlite::Sqlite>(&MIGRATIONS)?, present)
        }
        Migrations::Skip => Ok(()),
    }
}
