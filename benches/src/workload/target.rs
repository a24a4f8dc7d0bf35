//! Where a run works: a SQLite file, a schema of a PostgreSQL database, or behind a
//! transaction-pooling proxy a database of its own; the stores on it, and connections of the
//! workload's own (record, lock, footprint) that the statement counter does not see.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use dal_core::{DalError, History, TaskExecutionStore};
use dal_postgres::PgOptions;
use dal_sqlite::SqliteOptions;
use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};

use super::args::{Args, Location};
use super::harness::{StatementCounter, with_params};

/// The database a run works in.
#[derive(Debug, Clone)]
pub enum Db {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A schema of a PostgreSQL database: the URL, the schema (also the `application_name` of
    /// the store's sessions), and whether the URL is a transaction pooler's (which drops
    /// `options`, so the run has the database to itself, in `public`).
    Postgres(String, String, bool),
}

/// A connection of the workload's own: to the SQLite file, or to the PostgreSQL database.
pub enum Conn {
    /// SQLite.
    Sqlite(SqliteConnection),
    /// PostgreSQL.
    Pg(PgConnection),
}

/// Runs `$body` with `$c` bound to the connection in `$conn`, whichever its backend.
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::workload::target::Conn::Sqlite($c) => $body,
            $crate::workload::target::Conn::Pg($c) => $body,
        }
    };
}
pub(crate) use on_conn;

impl Db {
    /// A connection of the workload's own to the run's database (in its schema).
    pub fn connect(&self) -> Result<Conn, String> {
        match self {
            Db::Sqlite(path) => SqliteConnection::establish(&path.to_string_lossy())
                .map(Conn::Sqlite)
                .map_err(|e| format!("cannot open {}: {e}", path.display())),
            Db::Postgres(..) => pg(&self.url(false)).map(Conn::Pg),
        }
    }

    /// The run's PostgreSQL database, in its schema; for the store's sessions (`store`), also
    /// named after it.
    fn url(&self, store: bool) -> String {
        match self {
            Db::Postgres(url, schema, false) => {
                let search_path = format!("-csearch_path={schema}");
                let name: &str = if store { schema } else { "workload" };
                with_params(url, &[("options", &search_path), ("application_name", name)])
            }
            Db::Postgres(url, ..) => url.clone(),
            Db::Sqlite(path) => path.display().to_string(),
        }
    }
}

/// The database of a run; what the run created is removed when it is dropped, unless kept.
pub struct Target {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Where, for people (no password).
    pub location: String,
    /// Where, for connections.
    pub db: Db,
    /// The temporary directory of a SQLite file.
    _dir: Option<tempfile::TempDir>,
    /// The server, and the statement that drops the run's database or schema.
    drop: Option<(String, String)>,
}

impl Target {
    /// Creates or finds the database `args` name. Errors are one line for the user.
    pub fn open(args: &Args) -> Result<Target, String> {
        let (mut dir, mut drop) = (None, None);
        let db = match args.location()? {
            Location::TempSqlite => {
                let temp = tempfile::Builder::new().prefix("dal-workload-").tempdir();
                let temp = temp.map_err(|e| format!("cannot create a temporary directory: {e}"))?;
                let path = temp.path().join("workload.db");
                match args.keep {
                    true => _ = temp.keep(),
                    false => dir = Some(temp),
                }
                Db::Sqlite(path)
            }
            Location::Sqlite(path) if args.resume && !path.is_file() => {
                let missing = format!("there is no SQLite file {} to resume", path.display());
                return Err(missing);
            }
            Location::Sqlite(path) => Db::Sqlite(path),
            Location::Postgres(url) if args.transaction_pooling => {
                let name = fresh_name();
                let create = [format!("CREATE DATABASE \"{name}\"")];
                // The planner settings the store needs of the server behind a pooler.
                let set = |s| format!("ALTER DATABASE \"{name}\" SET {s} = off");
                let settings = ["enable_seqscan", "enable_bitmapscan"].map(set);
                run_sql(&url, &[&create[..], &settings].concat())?;
                let sql = format!("DROP DATABASE \"{name}\" WITH (FORCE)");
                drop = Some((url.clone(), sql));
                let url = with_params(&url, &[("dbname", &name)]);
                Db::Postgres(url, "public".into(), true)
            }
            Location::Postgres(url) => {
                let schema = args.schema.clone().unwrap_or_else(fresh_name);
                let exists = format!("SELECT 1 FROM pg_namespace WHERE nspname = '{schema}'");
                if !args.resume {
                    run_sql(&url, &[format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")])?;
                } else if !matches!(diesel::sql_query(exists).execute(&mut pg(&url)?), Ok(1)) {
                    return Err(format!("there is no schema {schema} to resume a run in"));
                }
                // A schema named on the command line is the user's: never dropped.
                if args.schema.is_none() {
                    drop = Some((url.clone(), format!("DROP SCHEMA \"{schema}\" CASCADE")));
                }
                Db::Postgres(url, schema, false)
            }
        };
        let (backend, location) = match &db {
            Db::Sqlite(path) => ("sqlite", path.display().to_string()),
            Db::Postgres(url, _, true) => ("postgres", format!("{} (pooled)", redact(url))),
            Db::Postgres(url, schema, _) => {
                ("postgres", format!("{} schema {schema}", redact(url)))
            }
        };
        let (_dir, drop) = (dir, drop.filter(|_| !args.keep));
        Ok(Target { backend, location, db, _dir, drop })
    }

    /// A store on the run's database (migrating it the first time), of `pool_size`
    /// connections, its statements counted by `counter`.
    pub fn connect(
        &self,
        pool_size: u32,
        history: History,
        counter: &StatementCounter,
    ) -> Result<Box<dyn TaskExecutionStore>, String> {
        let failed = |e: DalError| format!("cannot open the store on {}: {e}", self.location);
        let (size, counter) = (pool_size, counter.factory());
        Ok(match &self.db {
            Db::Sqlite(path) => {
                let options = SqliteOptions::new(path.to_string_lossy()).pool_size(size);
                let store = options.history(history).instrumentation(counter).open();
                Box::new(store.map_err(failed)?)
            }
            Db::Postgres(_, _, pooled) => {
                let options = PgOptions::new(self.db.url(true)).pool_size(size);
                let options = options.transaction_pooling(*pooled);
                let store = options.history(history).instrumentation(counter).connect();
                Box::new(store.map_err(failed)?)
            }
        })
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some((url, sql)) = self.drop.take()
            && let Err(err) = run_sql(&url, &[sql])
        {
            eprintln!("workload: cleaning up failed: {err}");
        }
    }
}

/// A connection to the PostgreSQL server at `url`.
pub fn pg(url: &str) -> Result<PgConnection, String> {
    PgConnection::establish(url).map_err(|e| format!("cannot connect to {}: {e}", redact(url)))
}

fn run_sql(url: &str, statements: &[String]) -> Result<(), String> {
    let mut conn = pg(url)?;
    for sql in statements {
        let done = diesel::sql_query(sql).execute(&mut conn);
        done.map_err(|e| format!("{sql} on {}: {e}", redact(url)))?;
    }
    Ok(())
}

/// A new schema or database name: the time, the process and a counter.
fn fresh_name() -> String {
    static MADE: AtomicU32 = AtomicU32::new(0);
    let now = chrono::Utc::now().format("%Y%m%d%H%M%S");
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    format!("dal_workload_{now}_{}_{n}", std::process::id())
}

/// `url` without its password.
pub fn redact(url: &str) -> String {
    let Some(scheme) = url.find("://") else {
        let words = url.split(' ');
        let hidden = words.map(|w| w.strip_prefix("password=").map_or(w, |_| "password=***"));
        return hidden.collect::<Vec<_>>().join(" ");
    };
    let at = url.rfind('@').filter(|&at| at > scheme + 3);
    match at.and_then(|at| Some((at, url[scheme + 3..at].split_once(':')?.0))) {
        Some((at, user)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
        None => url.to_owned(),
    }
}
