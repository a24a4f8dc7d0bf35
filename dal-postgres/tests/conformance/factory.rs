//! `dal-postgres` under test: a schema of its own per case on the server
//! [`dal_tests::provision::postgres`] finds, and the cases only PostgreSQL has.

/// The [`TestBackend`] methods of a PostgreSQL variant (a role, a pooler) that answer as
/// [`Postgres`] does: the statements and the SQL are the same.
macro_rules! as_postgres {
    () => {
        fn statement_counts(&self) -> Statements {
            Postgres.statement_counts()
        }

        fn lock_timeout(&self) -> LockTimeout {
            Postgres.lock_timeout()
        }

        fn id_literal(&self, id: Uuid) -> String {
            Postgres.id_literal(id)
        }

        fn refuse_events_sql(&self, event_type: &str) -> String {
            Postgres.refuse_events_sql(event_type)
        }

        fn empty_tables_sql(&self) -> &'static str {
            Postgres.empty_tables_sql()
        }
    };
}

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use dal_core::TaskExecutionStore;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl};
use uuid::Uuid;

use dal_tests::operations::Statements;
use dal_tests::provision::postgres::{
    ConnectionPermit, TempSchema, reserve_connections, server_url, with_params,
};
use dal_tests::suite::{HeldLock, LockTimeout, Plans, StoreSetup, TestBackend, TestDatabase};

/// PostgreSQL, as `dal-postgres` uses it.
#[derive(Debug, Clone, Copy)]
pub struct Postgres;

/// The factory the suite runs with.
pub static POSTGRES: Postgres = Postgres;

impl TestBackend for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn title(&self) -> &'static str {
        "PostgreSQL"
    }

    fn database(&self, connections: u32) -> Box<dyn TestDatabase> {
        Box::new(Schema::new(connections, None))
    }

    fn statement_counts(&self) -> Statements {
        Statements {
            // A data-modifying WITH: the write and the INSERT of its events. Batches bind each
            // column as one array, so any number of rows is one statement.
            logged_write: 1,
            // The write that matched nothing, then the SELECT that explains it.
            rejected_write: 2,
            large_batch: 1,
            empty_claim: 1,
            // One data-modifying WITH, whatever it finishes and claims.
            cycle: 1,
            cycle_per_failure: 0,
            // Abandon at the cap, then reset: two logged statements.
            sweep: 2,
            // A retention batch is one statement, whatever it finds.
            prune_removing: 1,
            prune_none_finished: 1,
            prune_nothing: 1,
        }
    }

    /// The logged single-row and many-row INSERTs, the logged guarded UPDATE and the plain one
    /// (heartbeats), the logged claim and batch completion, and the SELECTs; not the sweep and
    /// the retention batch, which are planned anew each time (`Unprepared`).
    fn prepared_per_connection(&self) -> usize {
        20
    }

    /// None: a batch is planned anew each time (`Unprepared`).
    fn prepared_per_prune_batch(&self) -> usize {
        0
    }

    fn lock_timeout(&self) -> LockTimeout {
        LockTimeout::LockNotAvailable
    }

    fn id_literal(&self, id: Uuid) -> String {
        format!("'{id}'")
    }

    fn refuse_events_sql(&self, event_type: &str) -> String {
        format!(
            "ALTER TABLE execution_events ADD CONSTRAINT no_{event_type} \
             CHECK (event_type <> '{event_type}') NOT VALID"
        )
    }

    fn empty_tables_sql(&self) -> &'static str {
        "TRUNCATE task_executions, execution_events"
    }
}

/// A case's schema, and the connections reserved for its stores.
pub struct Schema {
    schema: TempSchema,
    /// The role the stores connect as, with only DML rights on the schema, which was migrated
    /// beforehand; `None`: the server's user, which migrates it.
    role: Option<&'static str>,
    stores: Stores,
}

/// The stores a case opens on its database: the connections of each store after the first
/// are reserved as it opens (the first one's came with the database).
#[derive(Default)]
pub struct Stores {
    first_opened: AtomicBool,
    // Released after the stores: the permits of stores after the first.
    permits: Mutex<Vec<ConnectionPermit>>,
}

impl Stores {
    /// A store at `url` as `setup` asks, with `configure` applied to its options.
    pub fn open(
        &self,
        url: String,
        setup: &StoreSetup,
        configure: impl FnOnce(dal_postgres::PgOptions) -> dal_postgres::PgOptions,
    ) -> Arc<dyn TaskExecutionStore> {
        if self.first_opened.swap(true, Ordering::Relaxed) {
            self.permits
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(reserve_connections(setup.pool_size));
        }
        let mut options = configure(
            dal_postgres::PgOptions::new(url)
                .pool_size(setup.pool_size)
                .clock(setup.clock.clone())
                .history(setup.history),
        );
        if let Some(instrumentation) = &setup.instrumentation {
            options = options.instrumentation(instrumentation.clone());
        }
        Arc::new(
            options
                .connect()
                .expect("connect a PostgreSQL store for a case"),
        )
    }
}

/// The schema of a PostgreSQL fixture.
pub fn schema_of(f: &dal_tests::suite::Fixture) -> &TempSchema {
    f.database_as::<Schema>()
        .expect("a PostgreSQL fixture")
        .schema()
}

impl Schema {
    /// A new schema for stores of `connections` in all; with `role`, migrated first (as a
    /// separate step) and the role given DML rights on it.
    pub fn new(connections: u32, role: Option<&'static str>) -> Self {
        let schema = TempSchema::with_connections(connections);
        if let Some(role) = role {
            grant(&schema, role);
        }
        Schema {
            schema,
            role,
            stores: Stores::default(),
        }
    }

    /// The schema.
    pub fn schema(&self) -> &TempSchema {
        &self.schema
    }
}

/// The `options` server settings of a store's sessions for `setup`.
fn session_options(setup: &StoreSetup) -> String {
    let mut options = Vec::new();
    if let Some(timeout) = setup.lock_timeout {
        options.push(format!("-c lock_timeout={}", timeout.as_millis()));
    }
    match setup.plans {
        Plans::Default => {}
        Plans::Custom => options.push("-c plan_cache_mode=force_custom_plan".to_owned()),
        Plans::Generic => options.push("-c plan_cache_mode=force_generic_plan".to_owned()),
    }
    options.join(" ")
}

impl TestDatabase for Schema {
    fn open(&self, setup: &StoreSetup) -> Arc<dyn TaskExecutionStore> {
        let url = self.schema.url_with_options(&session_options(setup));
        match self.role {
            None => self.stores.open(url, setup, |options| options),
            Some(_) => self.stores.open(as_role(&url), setup, |options| {
                options.migrations(dal_postgres::Migrations::Verify)
            }),
        }
    }

    fn execute(&self, sql: &str) -> Result<(), String> {
        execute(self.schema.url(), sql)
    }

    fn hold_lock_on(&self, id: Uuid) -> Box<dyn HeldLock> {
        hold_lock_on(self.schema.url(), id)
    }

    fn inject_fault(&self) -> usize {
        let faults = self.schema.terminate_connections();
        thread::sleep(Duration::from_millis(15));
        faults
    }

    fn check_integrity(&self) -> Result<(), String> {
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Runs `sql` over a connection of its own to `url`.
pub fn execute(url: &str, sql: &str) -> Result<(), String> {
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    conn.batch_execute(sql).map_err(|e| e.to_string())
}

/// A connection to `url` holding the lock of task `id`'s row in an open transaction.
pub fn hold_lock_on(url: &str, id: Uuid) -> Box<dyn HeldLock> {
    let mut conn = PgConnection::establish(url).expect("connect");
    diesel::sql_query("BEGIN")
        .execute(&mut conn)
        .expect("BEGIN");
    diesel::sql_query("SELECT 1 FROM task_executions WHERE id = $1 FOR UPDATE")
        .bind::<diesel::sql_types::Uuid, _>(id)
        .execute(&mut conn)
        .expect("lock the row");
    Box::new(RowLock(conn))
}

/// A transaction holding a row lock.
struct RowLock(PgConnection);

impl HeldLock for RowLock {
    fn waiters(&mut self) -> Option<usize> {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let waiting = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))",
        )
        .get_result::<Count>(&mut self.0)
        .expect("pg_stat_activity");
        Some(usize::try_from(waiting.n).unwrap_or(0))
    }

    fn execute(&mut self, sql: &str) -> Result<usize, String> {
        diesel::sql_query(sql)
            .execute(&mut self.0)
            .map_err(|e| e.to_string())
    }

    fn commit(&mut self) -> Result<(), String> {
        self.execute("COMMIT").map(drop)
    }
}

/// The role the stores connect as. Made once per server (it owns nothing and is granted rights
/// on each case's schema only; the rights go with the schema).
pub const ROLE: &str = "dal_test_dml_only";

/// Makes [`ROLE`] if the server has none (once per process; concurrent test processes may race
/// to make it, and either error of the loser is taken as "made"), and returns the name of the
/// test server's database.
pub fn ensure_role() -> &'static str {
    static DATABASE: OnceLock<String> = OnceLock::new();
    DATABASE.get_or_init(|| {
        #[derive(diesel::QueryableByName)]
        struct Name {
            #[diesel(sql_type = diesel::sql_types::Text)]
            name: String,
        }
        let mut admin = PgConnection::establish(server_url()).expect("connect");
        admin
            .batch_execute(&format!(
                "DO $$ BEGIN CREATE ROLE {ROLE} LOGIN; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            ))
            .expect("make the DML-only role");
        diesel::sql_query("SELECT current_database()::text AS name")
            .get_result::<Name>(&mut admin)
            .expect("current_database()")
            .name
    })
}

/// `url` (of the test server) as [`ROLE`], in the same database (libpq would otherwise pick
/// the database named like the role).
pub fn as_role(url: &str) -> String {
    let database = ensure_role();
    with_params(url, &[("user", ROLE), ("dbname", database)])
}

/// Migrates `schema` as the server's user, as a deployment's migration step does, and gives
/// `role` DML rights on what the migrations made.
pub fn grant(schema: &TempSchema, role: &str) {
    ensure_role();
    dal_postgres::PgOptions::new(schema.url())
        .pool_size(1)
        .migrate()
        .expect("the migration step");
    let name = schema.name();
    let mut admin = PgConnection::establish(schema.url()).expect("connect");
    admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA \"{name}\" TO {role}; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{name}\" TO {role}; \
             GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA \"{name}\" TO {role}"
        ))
        .expect("grant DML rights");
}
