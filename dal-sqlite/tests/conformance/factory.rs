//! `dal-sqlite` under test: a database file of its own per case, in a temporary directory.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use dal_core::TaskExecutionStore;
use diesel::connection::SimpleConnection;
use diesel::{RunQueryDsl, SqliteConnection};
use uuid::Uuid;

use dal_tests::operations::Statements;
use dal_tests::provision::sqlite::TempDatabase;
use dal_tests::suite::{
    HeldLock, Holder, LockTimeout, StoreSetup, TestBackend, TestDatabase, Traits,
};

pub struct Sqlite;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl TestBackend for Sqlite {
    fn traits(&self) -> Traits {
        Traits {
            name: "sqlite",
            title: "SQLite",
            counts: Statements {
                // BEGIN IMMEDIATE, the write, the INSERT of its events, COMMIT.
                logged_write: 4,
                // The write that matched nothing in its transaction, then one SELECT.
                rejected_write: 4,
                // BEGIN, four INSERTs of tasks (2,048 a statement), two of events, COMMIT.
                large_batch: 8,
                // BEGIN IMMEDIATE, the claim, COMMIT (no events to insert).
                empty_claim: 3,
                // BEGIN IMMEDIATE, the completions, the claim, the INSERT of the events, COMMIT.
                cycle: 5,
                // Each failure is the guarded write of its task (its error is its own).
                cycle_per_failure: 1,
                // Abandon at the cap (no events here), then reset: two transactions.
                sweep: 7,
                // Unlocked, the scan and the check of the workflows; if some look finished,
                // BEGIN IMMEDIATE, the check again, two DELETEs, COMMIT. Nothing scanned: no check.
                prune_removing: 7,
                prune_none_finished: 2,
                prune_nothing: 1,
            },
            // Every statement is kept, of every shape a measured call used.
            prepared_per_connection: 32,
            // The scan, the check and the two DELETEs (`PreparedAs`).
            prepared_per_prune_batch: 4,
            lock_timeout: LockTimeout::Busy,
            id_literal: |id: Uuid| format!("X'{}'", id.simple()),
            refuse_events_sql: |event_type| {
                format!(
                    "CREATE TRIGGER no_{event_type} BEFORE INSERT ON execution_events \
                     WHEN NEW.event_type = '{event_type}' \
                     BEGIN SELECT RAISE(ABORT, 'no {event_type} events'); END"
                )
            },
            empty_tables_sql: "DELETE FROM execution_events; DELETE FROM task_executions;",
            history: dal_core::History::Kept,
        }
    }

    fn database(&self, _connections: u32) -> Box<dyn TestDatabase> {
        Box::new(File(TempDatabase::new()))
    }
}

struct File(TempDatabase);

impl File {
    fn connect(&self, sql: &str) -> Result<Holder<SqliteConnection>, String> {
        Holder::connect(&self.0.path().to_string_lossy(), sql, |_| None)
    }
}

impl TestDatabase for File {
    fn open(&self, setup: &StoreSetup) -> Arc<dyn TaskExecutionStore> {
        Arc::new(self.0.open(|options| {
            let timeout = setup.lock_timeout.unwrap_or(BUSY_TIMEOUT);
            let options = options.pool_size(setup.pool_size).busy_timeout(timeout);
            let options = options.clock(setup.clock.clone()).history(setup.history);
            match &setup.instrumentation {
                Some(instrumentation) => options.instrumentation(instrumentation.clone()),
                None => options,
            }
        }))
    }

    fn execute(&self, sql: &str) -> Result<(), String> {
        self.connect(sql).map(drop)
    }

    fn hold_lock_on(&self, _id: Uuid) -> Box<dyn HeldLock> {
        Box::new(self.connect("BEGIN IMMEDIATE").expect("lock"))
    }

    /// Another connection holds the write lock past the store's short busy timeout.
    fn inject_fault(&self) -> usize {
        let mut lock = self.connect("PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE").expect("lock");
        std::thread::sleep(Duration::from_millis(120));
        lock.conn.batch_execute("COMMIT").expect("unlock");
        std::thread::sleep(Duration::from_millis(30));
        1
    }

    fn check_integrity(&self) -> Result<(), String> {
        let check = diesel::dsl::sql::<diesel::sql_types::Text>("PRAGMA integrity_check");
        let found: Vec<String> =
            check.load(&mut self.connect("")?.conn).map_err(|e| e.to_string())?;
        (found == ["ok"]).then_some(()).ok_or(found.join("; "))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
