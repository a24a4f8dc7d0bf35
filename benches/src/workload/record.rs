//! The run record: one row of the workload's own table `dal_workload_run` (the run's id, its
//! job, the creation batches made so far), so that `--resume` knows the run's workflow
//! executions. In the run's schema on PostgreSQL; on SQLite in a database beside the file
//! (`PATH.workload-run`), where an update does not wait for the runners' write lock. And the
//! run lock, which goes with the process however it dies.

use std::any::Any;
use std::fs::{OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use uuid::Uuid;

use super::args::Job;
use super::target::{Conn, Db, Target, on_conn, pg};

/// What a run recorded of itself.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The run's id.
    pub run_id: Uuid,
    /// Its job.
    pub job: Job,
    /// Creation batches made (one more may have been made just before the process died).
    pub created_batches: u64,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    run_id: String,
    #[diesel(sql_type = Text)]
    job: String,
    #[diesel(sql_type = BigInt)]
    created_batches: i64,
}

/// A connection to the run's record.
pub struct Recorder(Conn);

impl Recorder {
    /// Connects to the record of the run in `db`, creating its table if it is missing.
    pub fn open(db: &Db) -> Result<Recorder, String> {
        let conn = match db {
            Db::Sqlite(path) => {
                let path = beside(path, ".workload-run");
                let conn = SqliteConnection::establish(&path.to_string_lossy());
                let mut conn = conn.map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                // A reader (the crash test) may hold it for a moment.
                let wait = diesel::sql_query("PRAGMA busy_timeout = 10000").execute(&mut conn);
                wait.map_err(|e| e.to_string())?;
                Conn::Sqlite(conn)
            }
            Db::Postgres(..) => db.connect()?,
        };
        let mut recorder = Recorder(conn);
        recorder.execute(
            "CREATE TABLE IF NOT EXISTS dal_workload_run (run_id TEXT PRIMARY KEY, job TEXT NOT \
             NULL, created_batches BIGINT NOT NULL)",
        )?;
        Ok(recorder)
    }

    fn execute(&mut self, sql: &str) -> Result<(), String> {
        let done = on_conn!(&mut self.0, c => diesel::sql_query(sql).execute(c));
        done.map(drop).map_err(|e| format!("the run record: {e}"))
    }

    /// The run recorded, if one is.
    pub fn read(&mut self) -> Result<Option<RunRecord>, String> {
        let sql = "SELECT run_id, job, created_batches FROM dal_workload_run";
        let rows: Vec<Row> = on_conn!(&mut self.0, c => diesel::sql_query(sql).load(c))
            .map_err(|e| format!("cannot read the run record: {e}"))?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some(RunRecord {
            run_id: Uuid::parse_str(&row.run_id).map_err(|e| format!("run id: {e}"))?,
            job: serde_json::from_str(&row.job).map_err(|e| format!("run arguments: {e}"))?,
            created_batches: u64::try_from(row.created_batches).unwrap_or_default(),
        }))
    }

    /// Records a new run.
    pub fn start(&mut self, run_id: Uuid, job: &Job) -> Result<(), String> {
        let job = serde_json::to_string(job).map_err(|e| e.to_string())?;
        let job = job.replace('\'', "''");
        let sql = format!("INSERT INTO dal_workload_run VALUES ('{run_id}', '{job}', 0)");
        self.execute(&sql)
    }

    /// Records that `batches` creation batches exist.
    pub fn created(&mut self, batches: u64) -> Result<(), String> {
        let sql = format!("UPDATE dal_workload_run SET created_batches = {batches}");
        self.execute(&sql)
    }
}

/// The file named `path` followed by `suffix`.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Takes the lock of `target`'s database at once, or says that another run holds it. What it
/// returns holds the lock until dropped.
pub fn lock(target: &Target) -> Result<Box<dyn Any>, String> {
    let busy = format!("another workload is working on {} now", target.location);
    match &target.db {
        Db::Sqlite(path) => {
            let name = beside(path, ".workload-lock");
            let mut options = OpenOptions::new();
            let open = options.create(true).truncate(false).write(true).open(&name);
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
            let key = format!("dal-workload {schema}");
            let sql = "SELECT 1 WHERE pg_try_advisory_lock(hashtextextended($1, 0))";
            let locked = diesel::sql_query(sql).bind::<Text, _>(key);
            let locked = locked.execute(&mut conn);
            match locked.map_err(|e| format!("cannot take the run lock: {e}"))? {
                1 => Ok(Box::new(conn)),
                _ => Err(busy),
            }
        }
    }
}
