//! The run record and the run lock.
//!
//! The record is one row in a table of the workload's own (`dal_workload_run`, not part of the
//! DAL's schema): the run's id, its arguments and how many creation batches have been made. It
//! is written when a run starts and after each `create_many`, so that after the process died,
//! `--resume` knows the run's workflow executions (their ids come from the run's id, see
//! [`super::plan`]) and which batches of them exist. On PostgreSQL the table is in the run's
//! schema. On SQLite it is in a small database of its own beside the file (`PATH.workload-run`):
//! in the run's file, each update would wait for SQLite's single write lock behind the
//! runners' writes (measured: 22 ms at the median, up to 336 ms, and the run 40% slower).
//!
//! The lock lets one workload at a time work on a database: an exclusive `flock` on a file
//! beside the SQLite file (`PATH.workload-lock`, left in place: removing it would let a second
//! process lock a new file while a third holds the old one), or a session advisory lock on
//! PostgreSQL, keyed by the schema. The kernel or the server releases either when the process
//! dies, however it dies.

use diesel::sql_types::{BigInt, Bool, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection};
use uuid::Uuid;

use super::args::Args;
use super::target::{Database, Target};

/// What a run recorded of itself.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The run's id, from which its workflow executions' ids are made.
    pub run_id: Uuid,
    /// The arguments it was started with (without the database URL).
    pub args: Args,
    /// Creation batches made so far (one more may have been made just before the process died).
    pub created_batches: u64,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    run_id: String,
    #[diesel(sql_type = Text)]
    args: String,
    #[diesel(sql_type = BigInt)]
    created_batches: i64,
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// A connection to the run's database, for the record.
pub enum Recorder {
    /// A SQLite file.
    Sqlite(SqliteConnection),
    /// The run's schema on PostgreSQL.
    Postgres(PgConnection),
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS dal_workload_run (\
     run_id TEXT PRIMARY KEY, args TEXT NOT NULL, created_batches BIGINT NOT NULL)";
const SELECT: &str = "SELECT run_id, args, created_batches FROM dal_workload_run";

impl Recorder {
    /// Connects to the run's database; creates the record's table if it is missing.
    pub fn open(database: &Database) -> Result<Recorder, String> {
        let mut recorder = Recorder::connect(database)?;
        recorder.execute_plain(CREATE_TABLE)?;
        Ok(recorder)
    }

    /// Connects to the run's record, as it is: reading fails while no run was recorded there.
    pub fn connect(database: &Database) -> Result<Recorder, String> {
        Ok(match database {
            Database::Sqlite(path) => {
                let url = beside(path, ".workload-run").to_string_lossy().into_owned();
                let mut conn = SqliteConnection::establish(&url).map_err(|e| e.to_string())?;
                // A reader (the crash test) may hold it for a moment.
                diesel::sql_query("PRAGMA busy_timeout = 10000")
                    .execute(&mut conn)
                    .map_err(|e| e.to_string())?;
                Recorder::Sqlite(conn)
            }
            Database::Postgres { .. } => Recorder::Postgres(
                PgConnection::establish(&database.url()).map_err(|e| e.to_string())?,
            ),
        })
    }

    fn execute_plain(&mut self, sql: &str) -> Result<usize, String> {
        match self {
            Recorder::Sqlite(conn) => diesel::sql_query(sql).execute(conn),
            Recorder::Postgres(conn) => diesel::sql_query(sql).execute(conn),
        }
        .map_err(|e| e.to_string())
    }

    /// The run recorded in the database, if one is.
    pub fn read(&mut self) -> Result<Option<RunRecord>, String> {
        let rows: Vec<Row> = match self {
            Recorder::Sqlite(conn) => diesel::sql_query(SELECT).load(conn),
            Recorder::Postgres(conn) => diesel::sql_query(SELECT).load(conn),
        }
        .map_err(|e| e.to_string())?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let run_id = Uuid::parse_str(&row.run_id).map_err(|e| format!("run id: {e}"))?;
        let args = serde_json::from_str(&row.args).map_err(|e| format!("run arguments: {e}"))?;
        Ok(Some(RunRecord {
            run_id,
            args,
            created_batches: u64::try_from(row.created_batches).unwrap_or_default(),
        }))
    }

    /// Records a new run: `run_id`, started with `args` (the database URL left out: it may hold
    /// a password).
    pub fn start(&mut self, run_id: Uuid, args: &Args) -> Result<(), String> {
        let mut recorded = args.clone();
        recorded.database_url = None;
        recorded.json = None;
        let json = serde_json::to_string(&recorded).map_err(|e| e.to_string())?;
        let id = run_id.to_string();
        match self {
            Recorder::Sqlite(conn) => diesel::sql_query(
                "INSERT INTO dal_workload_run (run_id, args, created_batches) VALUES (?, ?, 0)",
            )
            .bind::<Text, _>(&id)
            .bind::<Text, _>(&json)
            .execute(conn),
            Recorder::Postgres(conn) => diesel::sql_query(
                "INSERT INTO dal_workload_run (run_id, args, created_batches) VALUES ($1, $2, 0)",
            )
            .bind::<Text, _>(&id)
            .bind::<Text, _>(&json)
            .execute(conn),
        }
        .map(drop)
        .map_err(|e| e.to_string())
    }

    /// Records that `batches` creation batches exist.
    pub fn created(&mut self, batches: u64) -> Result<(), String> {
        let batches = i64::try_from(batches).map_err(|e| e.to_string())?;
        match self {
            Recorder::Sqlite(conn) => {
                diesel::sql_query("UPDATE dal_workload_run SET created_batches = ?")
                    .bind::<BigInt, _>(batches)
                    .execute(conn)
            }
            Recorder::Postgres(conn) => {
                diesel::sql_query("UPDATE dal_workload_run SET created_batches = $1")
                    .bind::<BigInt, _>(batches)
                    .execute(conn)
            }
        }
        .map(drop)
        .map_err(|e| e.to_string())
    }
}

/// The file named `path` followed by `suffix`.
fn beside(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// Held for the whole run: no other workload works on the same database meanwhile.
pub enum RunLock {
    /// The `flock` on the file beside the SQLite file.
    File(#[allow(dead_code)] std::fs::File),
    /// The session holding the advisory lock.
    Session(#[allow(dead_code)] PgConnection),
    /// None needed: the run's database was created for it (behind a transaction pooler).
    Fresh,
}

impl RunLock {
    /// Takes the lock of `target`'s database at once, or says who holds it.
    pub fn take(target: &Target) -> Result<RunLock, String> {
        let busy = || {
            format!(
                "another workload is working on {} now; wait for it to end (two runs on one \
                 database would each wait for tasks the other finished)",
                target.location
            )
        };
        match &target.database {
            Database::Sqlite(path) => {
                let name = beside(path, ".workload-lock");
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&name)
                    .map_err(|e| format!("cannot open {}: {e}", name.to_string_lossy()))?;
                match file.try_lock() {
                    Ok(()) => Ok(RunLock::File(file)),
                    Err(std::fs::TryLockError::WouldBlock) => Err(busy()),
                    Err(std::fs::TryLockError::Error(e)) => {
                        Err(format!("cannot lock {}: {e}", name.to_string_lossy()))
                    }
                }
            }
            // A fresh database of the run's own, which no other run can name: a session
            // advisory lock would not stay with this client behind the proxy anyway.
            Database::Postgres { pooled: true, .. } => Ok(RunLock::Fresh),
            Database::Postgres { url, schema, .. } => {
                let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
                let locked: Locked = diesel::sql_query(
                    "SELECT pg_try_advisory_lock(hashtextextended('dal-workload ' || $1, 0)) \
                     AS locked",
                )
                .bind::<Text, _>(schema)
                .get_result(&mut conn)
                .map_err(|e| e.to_string())?;
                if locked.locked {
                    Ok(RunLock::Session(conn))
                } else {
                    Err(busy())
                }
            }
        }
    }
}
