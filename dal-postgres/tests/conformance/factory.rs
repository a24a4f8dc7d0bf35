//! The factory of PostgreSQL and its variants, and what the backend's own cases share.

use std::any::Any;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use dal_core::{DalError, History, TaskExecution, TaskExecutionStore, TaskStore};
use dal_postgres::{INDEX_PLAN_SETTINGS as PLANS, Migrations, PgOptions};
use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, PgConnection, RunQueryDsl};
use uuid::Uuid;

use dal_tests::operations::Statements;
use dal_tests::provision::pooler::TempDatabase;
use dal_tests::provision::postgres::{ConnectionPermit, TempSchema, reserve_connections};
use dal_tests::provision::postgres::{server_url, with_params};
use dal_tests::suite::{Fixture, HeldLock, Holder, LockTimeout, Plans, StoreSetup};
use dal_tests::suite::{TestBackend, TestDatabase, Traits};

pub use dal_tests::provision::postgres::execute;

/// A schema per case: `Owner`, the store migrates it; `DmlOnly`, a migration step does and the
/// stores connect as [`ROLE`] verifying; `Pooled`, a database per case behind PgBouncer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Postgres {
    Owner,
    DmlOnly,
    Pooled,
}

/// One statement per write (events in the same WITH), cycle and retention batch; a rejected
/// write adds the SELECT that explains it; a sweep abandons, then resets. History off: the same.
pub const STATEMENTS: Statements = Statements {
    logged_write: 1,
    rejected_write: 2,
    large_batch: 1,
    empty_claim: 1,
    cycle: 1,
    cycle_per_failure: 0,
    sweep: 2,
    prune_removing: 1,
    prune_none_finished: 1,
    prune_nothing: 1,
};

/// The INSERTs, guarded and plain UPDATEs, claim, completion and SELECTs (not the sweep and
/// retention, planned anew); none behind the pooler.
pub const PREPARED: usize = 20;

impl TestBackend for Postgres {
    fn traits(&self) -> Traits {
        let (name, prepared) = match self {
            Postgres::Owner => ("postgres", PREPARED),
            Postgres::DmlOnly => ("postgres_dml_only", PREPARED),
            Postgres::Pooled => ("pgbouncer", 0),
        };
        Traits {
            name,
            // One column for all: the statements are the same.
            title: "PostgreSQL",
            counts: STATEMENTS,
            prepared_per_connection: prepared,
            prepared_per_prune_batch: 0,
            lock_timeout: LockTimeout::LockNotAvailable,
            id_literal: |id| format!("'{id}'"),
            refuse_events_sql: |event_type| {
                format!(
                    "ALTER TABLE execution_events ADD CONSTRAINT no_{event_type} \
                     CHECK (event_type <> '{event_type}') NOT VALID"
                )
            },
            empty_tables_sql: "TRUNCATE task_executions, execution_events",
            history: History::Kept,
        }
    }

    fn database(&self, connections: u32) -> Box<dyn TestDatabase> {
        let place = match self {
            Postgres::Pooled => Place::Pooled(TempDatabase::with_connections(connections, &PLANS)),
            // One more for the store's listening connection, opened at its first wait.
            _ => Place::Schema(TempSchema::with_connections(connections + 1)),
        };
        if let (Postgres::DmlOnly, Place::Schema(schema)) = (self, &place) {
            migrate_for_role(schema);
        }
        Box::new(Database { backend: *self, place, stores: Mutex::default() })
    }
}

enum Place {
    Schema(TempSchema),
    Pooled(TempDatabase),
}

/// A case's database, and the connections of each store after the first.
struct Database {
    backend: Postgres,
    place: Place,
    stores: Mutex<Vec<Option<ConnectionPermit>>>,
}

impl Database {
    fn direct_url(&self) -> &str {
        match &self.place {
            Place::Schema(schema) => schema.url(),
            Place::Pooled(database) => database.direct_url(),
        }
    }
}

pub fn schema_of(f: &Fixture) -> &TempSchema {
    match f.database_as::<Database>().map(|d| &d.place) {
        Some(Place::Schema(schema)) => schema,
        _ => panic!("not a fixture in a schema"),
    }
}

impl TestDatabase for Database {
    fn open(&self, setup: &StoreSetup) -> Arc<dyn TaskExecutionStore> {
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        let later = !stores.is_empty();
        stores.push(later.then(|| reserve_connections(setup.pool_size + 1)));
        let lock_timeout = setup.lock_timeout.map(|t| format!("-c lock_timeout={}", t.as_millis()));
        let plans = match setup.plans {
            Plans::Default => None,
            Plans::Custom => Some("-c plan_cache_mode=force_custom_plan".to_owned()),
            Plans::Generic => Some("-c plan_cache_mode=force_generic_plan".to_owned()),
        };
        let session = [lock_timeout, plans].into_iter().flatten().collect::<Vec<_>>().join(" ");
        let options = match (&self.place, self.backend) {
            (Place::Pooled(database), _) => {
                assert!(setup.lock_timeout.is_none(), "a session setting, which the proxy drops");
                PgOptions::new(database.pooled_url()).transaction_pooling(true)
            }
            (Place::Schema(schema), Postgres::DmlOnly) => {
                let url = as_role(&schema.url_with_options(&session));
                PgOptions::new(url).migrations(Migrations::Verify)
            }
            (Place::Schema(schema), _) => PgOptions::new(schema.url_with_options(&session)),
        };
        let options = options.pool_size(setup.pool_size).history(setup.history);
        let options = options.clock(setup.clock.clone());
        let options = match &setup.instrumentation {
            Some(instrumentation) => options.instrumentation(instrumentation.clone()),
            None => options,
        };
        Arc::new(options.connect().expect("connect a store for a case"))
    }

    fn execute(&self, sql: &str) -> Result<(), String> {
        execute(self.direct_url(), sql)
    }

    fn hold_lock_on(&self, id: Uuid) -> Box<dyn HeldLock> {
        let lock = format!("BEGIN; SELECT 1 FROM task_executions WHERE id = '{id}' FOR UPDATE");
        let waiters = |conn: &mut PgConnection| {
            let sql = "SELECT count(*) FROM pg_stat_activity \
                       WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))";
            usize::try_from(select::<BigInt, i64>(conn, sql)).ok()
        };
        Box::new(Holder::connect(self.direct_url(), &lock, waiters).expect("lock the row"))
    }

    /// The server terminates the store's sessions (none behind the pooler, which hides them).
    fn inject_fault(&self) -> usize {
        let Place::Schema(schema) = &self.place else {
            return 0;
        };
        let faults = schema.terminate_connections();
        std::thread::sleep(std::time::Duration::from_millis(15));
        faults
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

pub fn connect(url: &str) -> PgConnection {
    PgConnection::establish(url).unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

/// The one value (SQL type `ST`) `sql` selects.
pub fn select<ST, T>(conn: &mut PgConnection, sql: &str) -> T
where
    ST: diesel::expression::TypedExpressionType,
    diesel::expression::SqlLiteral<ST>: diesel::query_dsl::LoadQuery<'static, PgConnection, T>,
{
    let value = diesel::dsl::sql::<ST>(sql).get_result(conn);
    value.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub fn versions() -> Vec<String> {
    dal_diesel::open::versions::<diesel::pg::Pg>(&dal_postgres::MIGRATIONS).unwrap()
}

pub fn applied(url: &str) -> usize {
    let sql = "SELECT count(*) FROM __diesel_schema_migrations";
    usize::try_from(select::<BigInt, i64>(&mut connect(url), sql)).unwrap()
}

pub fn assert_writes(store: &dyn TaskStore) -> TaskExecution {
    let new = dal_core::NewTaskExecution::new(Uuid::now_v7(), "written");
    let task = store.create(&new).expect("create");
    assert_eq!(store.get(task.id).expect("get"), task);
    task
}

/// `err` is [`DalError::Settings`] of `[setting, requested, actual]`, a hint with `hint_has`,
/// not retryable.
pub fn assert_settings_error(err: &DalError, expected: [&str; 3], hint_has: &str) {
    let found = match err {
        DalError::Settings { setting: s, requested: r, actual: a, hint } => ([s, r, a], hint),
        other => panic!("expected DalError::Settings, got {other:?}"),
    };
    assert_eq!(found.0, expected);
    assert!(found.1.contains(hint_has) && !err.is_retryable(), "{err:?}");
}

/// The role of [`Postgres::DmlOnly`] stores: it owns nothing, its rights go with each schema.
pub const ROLE: &str = "dal_test_dml_only";

/// `url` as [`ROLE`] in the same database, the role made first (a racing loser's error is fine).
pub fn as_role(url: &str) -> String {
    static DATABASE: OnceLock<String> = OnceLock::new();
    let database = DATABASE.get_or_init(|| {
        let make = format!(
            "DO $$ BEGIN CREATE ROLE {ROLE} LOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        );
        execute(server_url(), &make).expect("make the DML-only role");
        select::<Text, String>(&mut connect(server_url()), "SELECT current_database()::text")
    });
    with_params(url, &[("user", ROLE), ("dbname", database)])
}

/// Migrates `schema` as a deployment's step does, and gives [`ROLE`] DML rights on it.
fn migrate_for_role(schema: &TempSchema) {
    as_role(schema.url());
    PgOptions::new(schema.url()).migrate().expect("the migration step");
    let name = schema.name();
    let grant = format!(
        "GRANT USAGE ON SCHEMA \"{name}\" TO {ROLE}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{name}\" TO {ROLE}; \
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA \"{name}\" TO {ROLE}"
    );
    execute(schema.url(), &grant).expect("grant DML rights");
}
