//! Where the workload runs: an embedded SQLite file, or a fresh schema on a PostgreSQL server.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use dal_core::{Clock, SystemClock, TaskExecutionStore};
use dal_tests::counter::StatementCounter;
use dal_tests::provision::postgres::with_params;
use diesel::{Connection, PgConnection, RunQueryDsl};

use super::args::Args;

/// The database a run works in, created for it: a SQLite file or a fresh PostgreSQL schema.
/// The run connects stores to it ([`Target::connect`]) as often as it needs.
pub struct Target {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Where, for the report (no password).
    pub location: String,
    /// Where, for connections.
    pub database: Database,
    pool_size: u32,
    history: dal_core::History,
    cleanup: Cleanup,
}

/// Where the run's data lives.
#[derive(Debug, Clone)]
pub enum Database {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A schema of a PostgreSQL database.
    Postgres {
        /// The server and database, as given.
        url: String,
        /// The run's schema; also the `application_name` of the store's connections, so that
        /// the run's sessions can be told apart on the server (see `footprint`).
        schema: String,
        /// Whether `url` is a transaction-pooling proxy: it then names the run's own database,
        /// whose `public` schema the run works in, and carries no `options`.
        pooled: bool,
    },
}

impl Database {
    /// The URL of the run's database: a SQLite path, or the PostgreSQL URL with the run's
    /// schema as `search_path` and `application_name`.
    pub fn url(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres {
                url, pooled: true, ..
            } => url.clone(),
            Database::Postgres { url, schema, .. } => with_params(
                url,
                &[
                    ("options", &format!("-csearch_path={schema}")),
                    ("application_name", schema),
                ],
            ),
        }
    }
}

enum Cleanup {
    Nothing,
    TempDir(#[allow(dead_code)] tempfile::TempDir),
    DropSchema { url: String, schema: String },
    DropDatabase { url: String, name: String },
}

/// Schemas and databases made by this process (see [`fresh_name`]).
static SCHEMAS: AtomicU32 = AtomicU32::new(0);

impl Target {
    /// Creates the database `args` asks for: a SQLite file (in a temporary directory unless a
    /// `sqlite://` URL names one) or a new schema on a PostgreSQL server. Errors are one line
    /// for the user.
    pub fn open(args: &Args) -> Result<Target, String> {
        let pool_size = args.pool_size.unwrap_or(args.runners + 2);
        match args.database_url.as_deref() {
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("dal-workload-")
                    .tempdir()
                    .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
                let path = dir.path().join("workload.db");
                let cleanup = if args.keep {
                    let _ = dir.keep();
                    Cleanup::Nothing
                } else {
                    Cleanup::TempDir(dir)
                };
                Ok(Target {
                    backend: "sqlite",
                    location: path.display().to_string(),
                    database: Database::Sqlite(path),
                    pool_size,
                    history: args.history.store(),
                    cleanup,
                })
            }
            Some(url) if url.starts_with("sqlite://") => {
                let path = PathBuf::from(&url["sqlite://".len()..]);
                if args.resume && !path.is_file() {
                    return Err(format!(
                        "there is no SQLite file {} to resume a run in",
                        path.display()
                    ));
                }
                Ok(Target {
                    backend: "sqlite",
                    location: path.display().to_string(),
                    database: Database::Sqlite(path),
                    pool_size,
                    history: args.history.store(),
                    cleanup: Cleanup::Nothing,
                })
            }
            Some(url) if is_postgres(url) && args.transaction_pooling => {
                let name = fresh_name();
                let mut admin = PgConnection::establish(url)
                    .map_err(|e| format!("cannot connect to {}: {e}", redact(url)))?;
                let mut statements = vec![format!("CREATE DATABASE \"{name}\"")];
                statements.extend(dal_postgres::INDEX_PLAN_SETTINGS.map(|(setting, value)| {
                    format!("ALTER DATABASE \"{name}\" SET {setting} = {value}")
                }));
                for sql in statements {
                    diesel::sql_query(&sql).execute(&mut admin).map_err(|e| {
                        format!("cannot create database {name} on {}: {e}", redact(url))
                    })?;
                }
                let cleanup = if args.keep {
                    Cleanup::Nothing
                } else {
                    Cleanup::DropDatabase {
                        url: url.to_owned(),
                        name: name.clone(),
                    }
                };
                Ok(Target {
                    backend: "postgres",
                    location: format!("{} database {name} (transaction pooling)", redact(url)),
                    database: Database::Postgres {
                        url: with_params(url, &[("dbname", &name)]),
                        schema: "public".to_owned(),
                        pooled: true,
                    },
                    pool_size,
                    history: args.history.store(),
                    cleanup,
                })
            }
            Some(url) if is_postgres(url) => {
                let named = args.schema.clone();
                let schema = named.clone().unwrap_or_else(fresh_name);
                let mut admin = PgConnection::establish(url)
                    .map_err(|e| format!("cannot connect to {}: {e}", redact(url)))?;
                if args.resume {
                    let found =
                        diesel::sql_query("SELECT 1 AS one FROM pg_namespace WHERE nspname = $1")
                            .bind::<diesel::sql_types::Text, _>(&schema)
                            .execute(&mut admin)
                            .map_err(|e| {
                                format!("cannot look for schema {schema} on {}: {e}", redact(url))
                            })?;
                    if found == 0 {
                        return Err(format!(
                            "there is no schema {schema} on {} to resume a run in",
                            redact(url)
                        ));
                    }
                } else {
                    let create = if named.is_some() {
                        "CREATE SCHEMA IF NOT EXISTS"
                    } else {
                        "CREATE SCHEMA"
                    };
                    diesel::sql_query(format!("{create} \"{schema}\""))
                        .execute(&mut admin)
                        .map_err(|e| {
                            format!("cannot create schema {schema} on {}: {e}", redact(url))
                        })?;
                }
                // A schema named on the command line is the user's: it is never dropped.
                let cleanup = if args.keep || named.is_some() {
                    Cleanup::Nothing
                } else {
                    Cleanup::DropSchema {
                        url: url.to_owned(),
                        schema: schema.clone(),
                    }
                };
                Ok(Target {
                    backend: "postgres",
                    location: format!("{} schema {schema}", redact(url)),
                    database: Database::Postgres {
                        url: url.to_owned(),
                        schema,
                        pooled: false,
                    },
                    pool_size,
                    history: args.history.store(),
                    cleanup,
                })
            }
            Some(other) => {
                let scheme = other.split("://").next().unwrap_or(other);
                Err(format!(
                    "unknown database URL scheme {scheme:?} in {other:?}: use postgres://USER@HOST/DB \
                     (or libpq's keyword=value form) or sqlite://PATH (or no --database-url for a \
                     temporary SQLite file)"
                ))
            }
        }
    }

    /// Connects a store to the run's database (migrating it the first time), its statements
    /// counted by `counter`. Dropping the store closes its connections.
    pub fn connect(
        &self,
        counter: &StatementCounter,
    ) -> Result<Arc<dyn TaskExecutionStore>, String> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        match &self.database {
            Database::Sqlite(path) => {
                open_sqlite(path, self.pool_size, clock, self.history, counter)
            }
            Database::Postgres { pooled, .. } => {
                let store = dal_postgres::PgOptions::new(self.database.url())
                    .transaction_pooling(*pooled)
                    .pool_size(self.pool_size)
                    .clock(clock)
                    .history(self.history)
                    .instrumentation(counter.factory())
                    .connect()
                    .map_err(|err| format!("cannot open the store on {}: {err}", self.location))?;
                Ok(Arc::new(store))
            }
        }
    }

    /// Removes what the run created, unless `--keep`.
    pub fn close(self) -> Result<(), String> {
        match self.cleanup {
            Cleanup::Nothing | Cleanup::TempDir(_) => Ok(()),
            Cleanup::DropSchema { url, schema } => {
                let mut admin = PgConnection::establish(&url).map_err(|e| e.to_string())?;
                diesel::sql_query(format!("DROP SCHEMA \"{schema}\" CASCADE"))
                    .execute(&mut admin)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Cleanup::DropDatabase { url, name } => {
                let mut admin = PgConnection::establish(&url).map_err(|e| e.to_string())?;
                diesel::sql_query(format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// A new schema or database name: the time, the process and a counter, so that runs started
/// in the same second get their own.
fn fresh_name() -> String {
    format!(
        "dal_workload_{}_{}_{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        std::process::id(),
        SCHEMAS.fetch_add(1, Ordering::Relaxed)
    )
}

fn open_sqlite(
    path: &std::path::Path,
    pool_size: u32,
    clock: Arc<dyn Clock>,
    history: dal_core::History,
    counter: &StatementCounter,
) -> Result<Arc<dyn TaskExecutionStore>, String> {
    let store = dal_sqlite::SqliteOptions::new(path.display().to_string())
        .pool_size(pool_size)
        .clock(clock)
        .history(history)
        .instrumentation(counter.factory())
        .open()
        .map_err(|e| format!("cannot open SQLite database {}: {e}", path.display()))?;
    Ok(Arc::new(store))
}

/// Whether `url` names a PostgreSQL server: a `postgres://` URL, or a libpq keyword/value
/// string (`host=/var/run/postgresql user=postgres`).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://")
        || url.starts_with("postgresql://")
        || (!url.contains("://") && url.contains('='))
}

/// `url` without its password.
pub fn redact(url: &str) -> String {
    if !url.contains("://") {
        return url
            .split(' ')
            .map(|word| match word.split_once('=') {
                Some(("password", _)) => "password=***",
                _ => word,
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
