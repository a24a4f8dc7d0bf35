//! Where the workload runs: an embedded SQLite file, or a fresh schema on a PostgreSQL server.

use std::path::PathBuf;
use std::sync::Arc;

use dal_core::{Clock, SystemClock, TaskExecutionStore};
use dal_tests::counter::StatementCounter;
use diesel::{Connection, PgConnection, RunQueryDsl};

use super::args::Args;

/// An opened store, what counts its statements, and how to clean up.
pub struct Target {
    /// The store.
    pub store: Arc<dyn TaskExecutionStore>,
    /// Counts every statement the store's connections send.
    pub counter: StatementCounter,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Where, for the report (no password).
    pub location: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Nothing,
    TempDir(#[allow(dead_code)] tempfile::TempDir),
    DropSchema { url: String, schema: String },
}

impl Target {
    /// Opens the store `args` asks for. Errors are one line for the user.
    pub fn open(args: &Args) -> Result<Target, String> {
        let counter = StatementCounter::new();
        let pool_size = args.pool_size.unwrap_or(args.runners + 2);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        match args.database_url.as_deref() {
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("dal-workload-")
                    .tempdir()
                    .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
                let path = dir.path().join("workload.db");
                let store = open_sqlite(&path, pool_size, clock, &counter)?;
                let cleanup = if args.keep {
                    let _ = dir.keep();
                    Cleanup::Nothing
                } else {
                    Cleanup::TempDir(dir)
                };
                Ok(Target {
                    store,
                    counter,
                    backend: "sqlite",
                    location: path.display().to_string(),
                    cleanup,
                })
            }
            Some(url) if url.starts_with("sqlite://") => {
                let path = PathBuf::from(&url["sqlite://".len()..]);
                let store = open_sqlite(&path, pool_size, clock, &counter)?;
                Ok(Target {
                    store,
                    counter,
                    backend: "sqlite",
                    location: path.display().to_string(),
                    cleanup: Cleanup::Nothing,
                })
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let schema = format!(
                    "dal_workload_{}_{}",
                    chrono::Utc::now().format("%Y%m%d%H%M%S"),
                    std::process::id()
                );
                let mut admin = PgConnection::establish(url)
                    .map_err(|e| format!("cannot connect to {}: {e}", redact(url)))?;
                diesel::sql_query(format!("CREATE SCHEMA \"{schema}\""))
                    .execute(&mut admin)
                    .map_err(|e| {
                        format!("cannot create schema {schema} on {}: {e}", redact(url))
                    })?;
                let separator = if url.contains('?') { '&' } else { '?' };
                let in_schema = format!("{url}{separator}options=-csearch_path%3D{schema}");
                let opened = dal_postgres::Options::new(in_schema)
                    .pool_size(pool_size)
                    .clock(clock)
                    .instrumentation(counter.factory())
                    .connect();
                let cleanup = if args.keep {
                    Cleanup::Nothing
                } else {
                    Cleanup::DropSchema {
                        url: url.to_owned(),
                        schema: schema.clone(),
                    }
                };
                match opened {
                    Ok(store) => Ok(Target {
                        store: Arc::new(store),
                        counter,
                        backend: "postgres",
                        location: format!("{} schema {schema}", redact(url)),
                        cleanup,
                    }),
                    Err(err) => {
                        drop(cleanup_now(cleanup));
                        Err(format!("cannot open the store on {}: {err}", redact(url)))
                    }
                }
            }
            Some(other) => {
                let scheme = other.split("://").next().unwrap_or(other);
                Err(format!(
                    "unknown database URL scheme {scheme:?} in {other:?}: use postgres://USER@HOST/DB \
                     or sqlite://PATH (or no --database-url for a temporary SQLite file)"
                ))
            }
        }
    }

    /// Removes what the run created, unless `--keep`.
    pub fn close(self) -> Result<(), String> {
        drop(self.store);
        cleanup_now(self.cleanup)
    }
}

fn cleanup_now(cleanup: Cleanup) -> Result<(), String> {
    match cleanup {
        Cleanup::Nothing | Cleanup::TempDir(_) => Ok(()),
        Cleanup::DropSchema { url, schema } => {
            let mut admin = PgConnection::establish(&url).map_err(|e| e.to_string())?;
            diesel::sql_query(format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .execute(&mut admin)
                .map(drop)
                .map_err(|e| e.to_string())
        }
    }
}

fn open_sqlite(
    path: &std::path::Path,
    pool_size: u32,
    clock: Arc<dyn Clock>,
    counter: &StatementCounter,
) -> Result<Arc<dyn TaskExecutionStore>, String> {
    let store = dal_sqlite::Options::new(path.display().to_string())
        .pool_size(pool_size)
        .clock(clock)
        .instrumentation(counter.factory())
        .open()
        .map_err(|e| format!("cannot open SQLite database {}: {e}", path.display()))?;
    Ok(Arc::new(store))
}

/// `url` without its password.
fn redact(url: &str) -> String {
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
