//! Where a run works ([`Target`]), its stores, and what the workload keeps there over connections
//! the statement counter does not see: the run record ([`Recorder`]), [`lock`] and [`footprint`].

use std::fs::{OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::{any::Any, time::Duration, time::Instant};

use dal_core::{History, TaskExecutionStore};
use dal_tests::{counter::StatementCounter, provision::postgres::with_params};
use diesel::sql_types::Text;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::args::{Args, Job};

/// A SQLite file, or PostgreSQL: URL, schema (the store sessions' `application_name`), and whether
/// the URL is a transaction pooler's (which drops `options`: the run's own database, `public`).
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum Db {
    Sqlite(PathBuf),
    Postgres(String, String, bool),
}

/// A connection of the workload's own: to the SQLite file, or to the PostgreSQL database.
#[allow(missing_docs)]
pub enum Conn {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

/// Runs `$body` with `$c` bound to the connection in `$conn`, whichever its backend.
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            Conn::Sqlite($c) => $body,
            Conn::Pg($c) => $body,
        }
    };
}

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

/// A run's database: backend, location for people (no password), [`Db`]; what the run created
/// (a temporary directory, a schema or database) is removed on drop unless kept.
#[allow(missing_docs)]
pub struct Target {
    pub backend: &'static str,
    pub location: String,
    pub db: Db,
    _dir: Option<tempfile::TempDir>,
    drop: Option<(String, String)>,
}

impl Target {
    /// Creates or finds the database `args` name. Errors are one line for the user.
    pub fn open(args: &Args) -> Result<Target, String> {
        let url = args.database_url.as_deref();
        // A URL, or libpq's keyword=value form.
        let postgres =
            url.filter(|u| u.starts_with("postgres") || !u.contains("://") && u.contains('='));
        let (pooled, schema) = (args.transaction_pooling, args.schema.is_some());
        let problem = if url.is_some_and(|u| postgres.is_none() && !u.starts_with("sqlite://")) {
            format!("unknown database URL scheme in {:?}", url.unwrap_or_default())
        } else if schema && postgres.is_none() {
            "--schema names a PostgreSQL schema: give a postgres:// URL".into()
        } else if pooled && (postgres.is_none() || schema || args.resume) {
            "--transaction-pooling needs a postgres:// URL, and not --schema or --resume".into()
        } else if args.resume && postgres.is_some() && !schema {
            "--resume on PostgreSQL needs --schema: the run's schema".into()
        } else if args.job.crashing_runners > args.job.runners {
            "--crashing-runners cannot exceed --runners".into()
        } else {
            String::new()
        };
        if !problem.is_empty() {
            return Err(problem);
        }
        let (mut _dir, mut drop) = (None, None);
        let db = match (url, postgres) {
            (None, _) => {
                let temp = tempfile::Builder::new().prefix("dal-workload-").tempdir();
                let mut temp =
                    temp.map_err(|e| format!("cannot create a temporary directory: {e}"))?;
                temp.disable_cleanup(args.keep);
                Db::Sqlite(_dir.insert(temp).path().join("workload.db"))
            }
            (Some(url), None) => {
                let path = PathBuf::from(&url["sqlite://".len()..]);
                if args.resume && !path.is_file() {
                    return Err(format!("there is no SQLite file {} to resume", path.display()));
                }
                Db::Sqlite(path)
            }
            (_, Some(url)) if args.transaction_pooling => {
                let name = fresh_name();
                let create = [format!("CREATE DATABASE \"{name}\"")];
                // The planner settings the store needs of the server behind a pooler.
                let set = |s| format!("ALTER DATABASE \"{name}\" SET {s} = off");
                let settings = ["enable_seqscan", "enable_bitmapscan"].map(set);
                run_sql(url, &[&create[..], &settings].concat())?;
                drop = Some((url.to_owned(), format!("DROP DATABASE \"{name}\" WITH (FORCE)")));
                Db::Postgres(with_params(url, &[("dbname", &name)]), "public".into(), true)
            }
            (_, Some(url)) => {
                let schema = args.schema.clone().unwrap_or_else(fresh_name);
                let exists = format!("SELECT 1 FROM pg_namespace WHERE nspname = '{schema}'");
                if !args.resume {
                    run_sql(url, &[format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")])?;
                } else if !matches!(diesel::sql_query(exists).execute(&mut pg(url)?), Ok(1)) {
                    return Err(format!("there is no schema {schema} to resume a run in"));
                }
                // A schema named on the command line is the user's: never dropped.
                if args.schema.is_none() {
                    drop = Some((url.to_owned(), format!("DROP SCHEMA \"{schema}\" CASCADE")));
                }
                Db::Postgres(url.to_owned(), schema, false)
            }
        };
        let (backend, location) = match &db {
            Db::Sqlite(path) => ("sqlite", path.display().to_string()),
            Db::Postgres(url, _, true) => ("postgres", format!("{} (pooled)", redact(url))),
            Db::Postgres(url, s, _) => ("postgres", format!("{} schema {s}", redact(url))),
        };
        Ok(Target { backend, location, db, _dir, drop: drop.filter(|_| !args.keep) })
    }

    /// A store of `pool_size` connections (migrating the first time), counted by `counter`.
    pub fn connect(
        &self,
        pool_size: u32,
        history: History,
        counter: &StatementCounter,
    ) -> Result<Box<dyn TaskExecutionStore>, String> {
        let failed = |e| format!("cannot open the store on {}: {e}", self.location);
        let (size, counter) = (pool_size, counter.factory());
        Ok(match &self.db {
            Db::Sqlite(path) => {
                let options = dal_sqlite::SqliteOptions::new(path.to_string_lossy());
                let options = options.pool_size(size).history(history).instrumentation(counter);
                Box::new(options.open().map_err(failed)?)
            }
            Db::Postgres(_, _, pooled) => {
                let options = dal_postgres::PgOptions::new(self.db.url(true)).pool_size(size);
                let options = options.history(history).transaction_pooling(*pooled);
                Box::new(options.instrumentation(counter).connect().map_err(failed)?)
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

/// The PostgreSQL server and database the benchmarks use unless told otherwise.
pub const SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

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

/// A row of one JSON document: the run record, or the footprint.
#[derive(QueryableByName)]
struct Json {
    #[diesel(sql_type = Text)]
    json: String,
}

/// What a run recorded of itself for `--resume`, as JSON in the one row of `dal_workload_run`
/// (one more creation batch than recorded may have been made just before the process died).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct RunRecord {
    pub run_id: Uuid,
    pub job: Job,
    pub created_batches: u64,
}

/// The run's record: in the run's schema, or beside the SQLite file (`PATH.workload-run`, where an
/// update does not wait for the runners' write lock).
pub struct Recorder(Conn, Option<RunRecord>);

impl Recorder {
    /// Connects to the record of the run in `db`, creating its table if it is missing.
    pub fn open(db: &Db) -> Result<Recorder, String> {
        let own = match db {
            Db::Sqlite(path) => Db::Sqlite(beside(path, ".workload-run")),
            _ => db.clone(),
        };
        let mut recorder = Recorder(own.connect()?, None);
        // A reader (the crash test) may hold it for a moment.
        if let Conn::Sqlite(_) = recorder.0 {
            recorder.execute("PRAGMA busy_timeout = 10000")?;
        }
        recorder.execute("CREATE TABLE IF NOT EXISTS dal_workload_run (json TEXT NOT NULL)")?;
        Ok(recorder)
    }

    fn execute(&mut self, sql: &str) -> Result<(), String> {
        let done = on_conn!(&mut self.0, c => diesel::sql_query(sql).execute(c));
        done.map(drop).map_err(|e| format!("the run record: {e}"))
    }

    /// The run recorded, if one is.
    pub fn read(&mut self) -> Result<Option<RunRecord>, String> {
        let sql = "SELECT json FROM dal_workload_run";
        let rows: Vec<Json> = on_conn!(&mut self.0, c => diesel::sql_query(sql).load(c))
            .map_err(|e| format!("cannot read the run record: {e}"))?;
        let record = rows.first().map(|row| serde_json::from_str(&row.json));
        self.1 = record.transpose().map_err(|e| format!("the run record: {e}"))?;
        Ok(self.1.clone())
    }

    /// Records that `batches` creation batches exist.
    pub(crate) fn created(&mut self, batches: u64) -> Result<(), String> {
        let record = self.1.clone().ok_or("no run recorded")?;
        self.save(RunRecord { created_batches: batches, ..record })
    }

    /// Records `record`: a new run, or its progress.
    pub(crate) fn save(&mut self, record: RunRecord) -> Result<(), String> {
        let json = serde_json::to_string(&record).map_err(|e| e.to_string())?.replace('\'', "''");
        let sql = match self.1.replace(record) {
            Some(_) => format!("UPDATE dal_workload_run SET json = '{json}'"),
            None => format!("INSERT INTO dal_workload_run VALUES ('{json}')"),
        };
        self.execute(&sql)
    }
}

fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Takes the lock of `target`'s database at once (held until dropped or the process dies).
pub fn lock(target: &Target) -> Result<Box<dyn Any>, String> {
    let busy = format!("another workload is working on {} now", target.location);
    match &target.db {
        Db::Sqlite(path) => {
            let name = beside(path, ".workload-lock");
            let open = OpenOptions::new().create(true).truncate(false).write(true).open(&name);
            let file = open.map_err(|e| format!("cannot open {}: {e}", name.display()))?;
            match file.try_lock() {
                Ok(()) => Ok(Box::new(file)),
                Err(TryLockError::WouldBlock) => Err(busy),
                Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", name.display())),
            }
        }
        // Behind a transaction pooler the run's database is its own.
        Db::Postgres(_, _, true) => Ok(Box::new(())),
        Db::Postgres(url, schema, false) => {
            let mut conn = pg(url)?;
            let sql = "SELECT 1 WHERE pg_try_advisory_lock(hashtextextended($1, 0))";
            let locked = diesel::sql_query(sql).bind::<Text, _>(format!("dal-workload {schema}"));
            match locked.execute(&mut conn).map_err(|e| format!("cannot take the run lock: {e}"))? {
                1 => Ok(Box::new(conn)),
                _ => Err(busy),
            }
        }
    }
}

/// A table, index or file (`kind`) a run left: its size (PostgreSQL: main fork); the file's free
/// pages; PostgreSQL tables' live and dead rows and autovacuums, indexes' entries read per claim.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct Relation {
    pub table: String,
    pub name: String,
    pub kind: String,
    pub bytes: i64,
    pub free_bytes: Option<i64>,
    pub live_rows: Option<i64>,
    pub dead_rows: Option<i64>,
    pub autovacuums: Option<i64>,
    #[serde(skip_serializing)]
    entries: Option<i64>,
    pub read_per_claim: Option<f64>,
}

const POSTGRES: &str = r#"
SELECT coalesce(json_agg(r ORDER BY r."table" DESC, r.kind DESC, r.name), '[]')::text AS json FROM (
  SELECT relname AS "table", relname AS name, 'table' AS kind, pg_relation_size(relid) AS bytes,
    n_live_tup AS live_rows, n_dead_tup AS dead_rows, autovacuum_count AS autovacuums,
    NULL::bigint AS entries FROM pg_stat_user_tables WHERE schemaname = 'SCHEMA' AND relname IN OURS
  UNION ALL SELECT relname, indexrelname, 'index', pg_relation_size(indexrelid), NULL, NULL, NULL,
    idx_tup_read FROM pg_stat_user_indexes WHERE schemaname = 'SCHEMA' AND relname IN OURS) AS r"#;

/// `dbstat` counts each b-tree's pages (the bundled SQLite has it).
const SQLITE: &str = r#"
SELECT json_group_array(json_object('table', t, 'name', n, 'kind', k, 'bytes', b, 'free_bytes', f))
  AS json FROM (SELECT '' AS t, 'database file' AS n, 'file' AS k, page_count * page_size AS b,
    freelist_count * page_size AS f FROM pragma_page_count(), pragma_page_size(), pragma_freelist_count()
  UNION ALL SELECT * FROM (SELECT m.tbl_name, s.name, m.type, sum(s.pgsize), NULL
    FROM dbstat AS s JOIN sqlite_schema AS m ON m.name = s.name WHERE m.tbl_name IN OURS
    GROUP BY s.name ORDER BY 1 DESC, 3 DESC, 2))"#;

/// The store's relations; `after` a run (the footprint at its start, its claims) with each index's
/// entries read per claim (PostgreSQL without a pooler, once the store's sessions have ended).
pub fn footprint(db: &Db, after: Option<(&[Relation], u64)>) -> Result<Vec<Relation>, String> {
    let ended = match db {
        Db::Postgres(url, schema, false) if after.is_some() => sessions_ended(url, schema)?,
        _ => false,
    };
    let sql = match db {
        Db::Postgres(_, schema, _) => POSTGRES.replace("SCHEMA", schema),
        Db::Sqlite(_) => SQLITE.to_owned(),
    };
    let query = diesel::sql_query(sql.replace("OURS", "('task_executions', 'execution_events')"));
    let json: Result<Json, _> = on_conn!(&mut db.connect()?, c => query.get_result(c));
    let failed = |e: &dyn std::fmt::Display| format!("cannot read the footprint: {e}");
    let mut relations: Vec<Relation> =
        serde_json::from_str(&json.map_err(|e| failed(&e))?.json).map_err(|e| failed(&e))?;
    for (relation, (start, claims)) in relations.iter_mut().zip(after.iter().cycle()) {
        let before = start.iter().find(|r| r.name == relation.name).and_then(|r| r.entries);
        if let (true, Some(end), Some(start)) = (ended, relation.entries, before) {
            relation.read_per_claim = Some((end - start) as f64 / (*claims).max(1) as f64);
        }
    }
    Ok(relations)
}

/// Waits (up to 15 s, else false) until no store session (named after the schema) is left: a
/// backend reports its counters as it exits, before it leaves `pg_stat_activity`.
fn sessions_ended(url: &str, schema: &str) -> Result<bool, String> {
    let mut conn = pg(url)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let sql = format!("SELECT 1 FROM pg_stat_activity WHERE application_name = '{schema}'");
    while Instant::now() < deadline {
        let left = diesel::sql_query(&sql).execute(&mut conn);
        if left.map_err(|e| format!("cannot read pg_stat_activity: {e}"))? == 0 {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("workload: the run's sessions did not end; index entries per claim left out");
    Ok(false)
}
