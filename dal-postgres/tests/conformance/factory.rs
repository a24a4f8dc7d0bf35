//! `dal-postgres` under test: the factory of PostgreSQL and its variants, each case on a
//! database of its own on the server [`dal_tests::provision::postgres`] finds, and what the
//! backend's own cases share.

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

/// PostgreSQL as the suite runs it, each case in a schema of its own: `Owner`, the store
/// migrates it; `DmlOnly`, as a deployment with migrations as a step of their own (the
/// server's user migrates it, the stores connect as [`ROLE`] with [`Migrations::Verify`]);
/// `Pooled`, through PgBouncer in transaction pooling, each case in a database of its own (the
/// proxy drops the `options` a schema needs), nothing kept prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Postgres {
    Owner,
    DmlOnly,
    Pooled,
}

/// One statement per write (its events in the same data-modifying WITH; a batch binds each
/// column as one array), cycle and retention batch; a rejected write is the write, then the
/// SELECT that explains it; a sweep abandons at the cap, then resets. The same with the history
/// off.
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

/// The logged single-row and many-row INSERTs, the logged guarded UPDATE and the plain one
/// (heartbeats), the logged claim and batch completion, and the SELECTs (not the sweep and
/// the retention batch, planned anew each time); none behind the pooler.
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
            _ => Place::Schema(TempSchema::with_connections(connections)),
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

/// A case's database, and the connections of each store after the first (the first one's came
/// with the database).
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

/// The schema of a fixture not behind the pooler.
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
        stores.push(later.then(|| reserve_connections(setup.pool_size)));
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

    /// The server terminates the store's sessions; none behind the pooler, which hides them.
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

/// The one value (of SQL type `ST`) that `sql` selects.
pub fn select<ST, T>(conn: &mut PgConnection, sql: &str) -> T
where
    ST: diesel::expression::TypedExpressionType,
    diesel::expression::SqlLiteral<ST>: diesel::query_dsl::LoadQuery<'static, PgConnection, T>,
{
    let value = diesel::dsl::sql::<ST>(sql).get_result(conn);
    value.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Every migration version of this build, oldest first.
pub fn versions() -> Vec<String> {
    dal_diesel::open::versions::<diesel::pg::Pg>(&dal_postgres::MIGRATIONS).unwrap()
}

/// How many migrations the database at `url` lists as applied.
pub fn applied(url: &str) -> usize {
    let sql = "SELECT count(*) FROM __diesel_schema_migrations";
    usize::try_from(select::<BigInt, i64>(&mut connect(url), sql)).unwrap()
}

/// Creates a task through `store`, reads it back and returns it.
pub fn assert_writes(store: &dyn TaskStore) -> TaskExecution {
    let new = dal_core::NewTaskExecution::new(Uuid::now_v7(), "written");
    let task = store.create(&new).expect("create");
    assert_eq!(store.get(task.id).expect("get"), task);
    task
}

/// Asserts that `err` is [`DalError::Settings`] of these `setting`, `requested` and `actual`,
/// with a hint that contains `hint_has`, and not retryable.
pub fn assert_settings_error(err: &DalError, expected: [&str; 3], hint_has: &str) {
    let found = match err {
        DalError::Settings { setting: s, requested: r, actual: a, hint } => ([s, r, a], hint),
        other => panic!("expected DalError::Settings, got {other:?}"),
    };
    assert_eq!(found.0, expected);
    assert!(found.1.contains(hint_has) && !err.is_retryable(), "{err:?}");
}

/// The role of [`Postgres::DmlOnly`] stores. Made once per server: it owns nothing and has
/// rights on each case's schema only, which go with the schema.
pub const ROLE: &str = "dal_test_dml_only";

/// `url` (of the test server) as [`ROLE`], in the same database (libpq would otherwise pick
/// the database named like the role). Makes the role first if the server has none: test
/// processes may race to make it, and the loser takes either error as "made".
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

/// Migrates `schema` as the server's user, as a deployment's migration step does, and gives
/// [`ROLE`] DML rights on what the migrations made.
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
