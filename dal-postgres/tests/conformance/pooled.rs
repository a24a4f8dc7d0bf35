//! `dal-postgres` behind a transaction-pooling proxy (PgBouncer, `pool_mode = transaction`),
//! with [`dal_postgres::PgOptions::transaction_pooling`] on: a database of its own per case
//! ([`TempDatabase`]), its planner settings made on the database, and the proxy's own cases
//! (options it drops, migrations of processes starting at once).
//!
//! It runs every group of the suite but `faults`, whose cases set a session's
//! `lock_timeout` in the connection's `options` (which the proxy drops) and terminate the
//! server sessions of a schema (which the proxy hides behind its pool). Every statement is
//! planned for its execution here (nothing is kept prepared), so a store asked for generic
//! or custom plans ([`Plans`]) gets the same as any other.

use std::any::Any;
use std::sync::Arc;

use dal_core::{TaskExecutionStore, TaskStore};
use diesel::{Connection, PgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::factory::{Postgres, Stores, execute, hold_lock_on};
use crate::opening::assert_settings_error;
use dal_tests::operations::Statements;
use dal_tests::provision::pooler::TempDatabase;
use dal_tests::provision::postgres::with_params;
use dal_tests::suite::{HeldLock, LockTimeout, StoreSetup, TestBackend, TestDatabase};

/// The planner settings the store checks for behind a proxy, made on each case's database.
const INDEX_PLANS: [(&str, &str); 2] = dal_postgres::INDEX_PLAN_SETTINGS;

/// PostgreSQL through PgBouncer in transaction pooling.
#[derive(Debug, Clone, Copy)]
pub struct Pooled;

impl TestBackend for Pooled {
    as_postgres!();

    fn name(&self) -> &'static str {
        "pgbouncer"
    }

    /// The same column as PostgreSQL's: behind the proxy every operation sends the same
    /// statements.
    fn title(&self) -> &'static str {
        Postgres.title()
    }

    fn database(&self, connections: u32) -> Box<dyn TestDatabase> {
        Box::new(Database {
            database: TempDatabase::with_connections(connections, &INDEX_PLANS),
            stores: Stores::default(),
        })
    }

    /// None: no statement is kept prepared on a connection.
    fn prepared_per_connection(&self) -> usize {
        0
    }

    fn prepared_per_prune_batch(&self) -> usize {
        0
    }
}

/// A case's database behind the proxy, and the connections reserved for its stores.
struct Database {
    database: TempDatabase,
    stores: Stores,
}

impl TestDatabase for Database {
    fn open(&self, setup: &StoreSetup) -> Arc<dyn TaskExecutionStore> {
        assert!(
            setup.lock_timeout.is_none(),
            "a lock timeout is a session setting, which the proxy drops"
        );
        self.stores
            .open(self.database.pooled_url().to_owned(), setup, |options| {
                options.transaction_pooling(true)
            })
    }

    fn execute(&self, sql: &str) -> Result<(), String> {
        execute(self.database.direct_url(), sql)
    }

    fn hold_lock_on(&self, id: Uuid) -> Box<dyn HeldLock> {
        hold_lock_on(self.database.direct_url(), id)
    }

    /// None: the `faults` group does not run behind the proxy.
    fn inject_fault(&self) -> usize {
        0
    }

    fn check_integrity(&self) -> Result<(), String> {
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The proxy's own cases.
pub const CASES: &[(&str, fn())] = &[
    (
        "options_the_pooler_drops_fail_the_connect_and_nothing_is_written",
        options_the_pooler_drops_fail_the_connect_and_nothing_is_written,
    ),
    (
        "planner_settings_missing_on_the_server_fail_the_connect",
        planner_settings_missing_on_the_server_fail_the_connect,
    ),
    (
        "processes_connecting_at_once_migrate_once",
        processes_connecting_at_once_migrate_once,
    ),
];

/// The tables of the DAL in `schema` of the database at `url`.
fn tables_in(url: &str, schema: &str) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Table {
        #[diesel(sql_type = diesel::sql_types::Text)]
        tablename: String,
    }
    let mut conn = PgConnection::establish(url).expect("connect");
    let mut names: Vec<String> = diesel::sql_query(
        "SELECT tablename::text AS tablename FROM pg_tables WHERE schemaname = $1",
    )
    .bind::<diesel::sql_types::Text, _>(schema)
    .load::<Table>(&mut conn)
    .expect("pg_tables")
    .into_iter()
    .map(|t| t.tablename)
    .collect();
    names.sort();
    names
}

/// A URL asking for schema `tenant` in its `options`, through the proxy, which drops them: the
/// connect fails with the setting named, before anything is written in `public` (where the
/// session would have written) or in `tenant`.
fn options_the_pooler_drops_fail_the_connect_and_nothing_is_written() {
    let database = TempDatabase::with_connections(2, &INDEX_PLANS);
    execute(database.direct_url(), "CREATE SCHEMA tenant").expect("create the schema");
    let url = with_params(
        database.pooled_url(),
        &[("options", "-csearch_path=tenant")],
    );
    let err = dal_postgres::PgOptions::new(url)
        .transaction_pooling(true)
        .pool_size(1)
        .connect()
        .map(drop)
        .expect_err("the search_path did not reach the server");
    assert_settings_error(
        &err,
        ("search_path", "tenant", "\"$user\", public"),
        "ALTER ROLE",
    );
    assert_eq!(
        tables_in(database.direct_url(), "public"),
        Vec::<String>::new()
    );
    assert_eq!(
        tables_in(database.direct_url(), "tenant"),
        Vec::<String>::new()
    );

    // A custom setting the session then lacks altogether reads as empty: the same error.
    let url = with_params(database.pooled_url(), &[("options", "-cdal.tenant=a")]);
    let err = dal_postgres::PgOptions::new(url)
        .transaction_pooling(true)
        .pool_size(1)
        .connect()
        .map(drop)
        .expect_err("the custom setting did not reach the server");
    assert_settings_error(&err, ("dal.tenant", "a", ""), "ALTER ROLE");
    assert_eq!(
        tables_in(database.direct_url(), "public"),
        Vec::<String>::new()
    );

    // Made on the database instead (before the proxy opens a session on it: a database's
    // settings apply to the sessions opened after), the schema is used.
    let settings = [INDEX_PLANS[0], INDEX_PLANS[1], ("search_path", "tenant")];
    let database = TempDatabase::with_connections(2, &settings);
    execute(database.direct_url(), "CREATE SCHEMA tenant").expect("create the schema");
    let url = with_params(
        database.pooled_url(),
        &[("options", "-csearch_path=tenant")],
    );
    let store = dal_postgres::PgOptions::new(url)
        .transaction_pooling(true)
        .pool_size(1)
        .connect()
        .expect("the search_path is the one asked for");
    drop(store);
    assert_eq!(
        tables_in(database.direct_url(), "public"),
        Vec::<String>::new()
    );
    assert_eq!(
        tables_in(database.direct_url(), "tenant"),
        [
            "__diesel_schema_migrations",
            "execution_events",
            "task_executions"
        ]
    );
}

/// Behind the proxy the store sets no session settings: with the index plans asked for and not
/// made on the server, the connect fails naming the first missing one and writes nothing;
/// with them off, it opens.
fn planner_settings_missing_on_the_server_fail_the_connect() {
    let database = TempDatabase::with_connections(2, &[]);
    let err = dal_postgres::PgOptions::new(database.pooled_url())
        .transaction_pooling(true)
        .pool_size(1)
        .connect()
        .map(drop)
        .expect_err("the planner settings are not made on the server");
    assert_settings_error(&err, ("enable_seqscan", "off", "on"), "ALTER ROLE");
    assert_eq!(
        tables_in(database.direct_url(), "public"),
        Vec::<String>::new()
    );
    let store = dal_postgres::PgOptions::new(database.pooled_url())
        .transaction_pooling(true)
        .index_plans(false)
        .pool_size(1)
        .connect()
        .expect("no planner settings asked for");
    let task = store
        .create(&dal_core::NewTaskExecution::new(Uuid::now_v7(), "pooled"))
        .expect("a write through the pooler");
    assert_eq!(store.get(task.id).expect("read it back"), task);
}

/// Several processes (here threads, each a store of its own) connecting at once to a new
/// database through the proxy: the migrations' transaction-scoped lock lets one migrate, and
/// every store opens on the same schema.
fn processes_connecting_at_once_migrate_once() {
    const STORES: u32 = 4;
    let database = TempDatabase::with_connections(STORES, &INDEX_PLANS);
    let stores: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..STORES)
            .map(|_| {
                scope.spawn(|| {
                    dal_postgres::PgOptions::new(database.pooled_url())
                        .transaction_pooling(true)
                        .pool_size(1)
                        .connect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic").expect("every store opens"))
            .collect()
    });
    let created = stores[0]
        .create(&dal_core::NewTaskExecution::new(Uuid::now_v7(), "first"))
        .expect("create");
    for store in &stores {
        assert_eq!(store.get(created.id).expect("read"), created);
    }
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(database.direct_url()).expect("connect");
    let applied: Count = diesel::sql_query("SELECT count(*) AS n FROM __diesel_schema_migrations")
        .get_result(&mut conn)
        .expect("the migrations table");
    let embedded =
        diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&dal_postgres::MIGRATIONS)
            .expect("the embedded migrations")
            .len();
    assert_eq!(usize::try_from(applied.n).expect("a count"), embedded);
}
