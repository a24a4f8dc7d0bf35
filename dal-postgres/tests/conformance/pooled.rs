//! PgBouncer in transaction pooling: options it drops, planner settings missing, processes
//! migrating at once. (Its runs skip `faults`, which need `options` and the server's sessions.)

use dal_core::{DalError, TaskStore};
use dal_postgres::{INDEX_PLAN_SETTINGS, PgOptions, PgStore};
use diesel::sql_types::Text;

use crate::factory::versions;
use crate::factory::{applied, assert_settings_error, assert_writes, connect, execute, select};
use dal_tests::provision::pooler::TempDatabase;
use dal_tests::provision::postgres::with_params;

fn open(url: &str) -> Result<PgStore, DalError> {
    let options = PgOptions::new(url).transaction_pooling(true);
    options.pool_size(1).connect()
}

/// The tables in each of `schemas` of `database`, as `schema: table, ...`.
fn tables(database: &TempDatabase, schemas: &[&str]) -> Vec<String> {
    let mut conn = connect(database.direct_url());
    let mut in_schema = |schema: &&str| {
        let names = format!(
            "SELECT coalesce(string_agg(tablename, ', ' ORDER BY tablename), '') FROM pg_tables \
             WHERE schemaname = '{schema}'"
        );
        format!("{schema}: {}", select::<Text, String>(&mut conn, &names))
    };
    schemas.iter().map(&mut in_schema).collect()
}

/// A schema (`tenant`) or a custom setting in `options`, which the proxy drops: the connect
/// fails naming it, nothing written. Made on the database before any session, it is used.
pub fn options_the_pooler_drops_fail_the_connect_and_nothing_is_written() {
    let database = TempDatabase::with_connections(2, &INDEX_PLAN_SETTINGS);
    execute(database.direct_url(), "CREATE SCHEMA tenant").expect("create the schema");
    let with = |db: &TempDatabase, options| with_params(db.pooled_url(), &[("options", options)]);
    let err = open(&with(&database, "-csearch_path=tenant")).map(drop).unwrap_err();
    let search_path = ["search_path", "tenant", "\"$user\", public"];
    assert_settings_error(&err, search_path, "ALTER ROLE");
    // A custom setting the session then lacks altogether reads as empty: the same error.
    let err = open(&with(&database, "-cdal.tenant=a")).map(drop).unwrap_err();
    assert_settings_error(&err, ["dal.tenant", "a", ""], "ALTER ROLE");
    let nothing = ["public: ", "tenant: "];
    assert_eq!(tables(&database, &["public", "tenant"]), nothing);
    drop(database);

    let [plans, more] = INDEX_PLAN_SETTINGS;
    let database = TempDatabase::with_connections(2, &[plans, more, ("search_path", "tenant")]);
    execute(database.direct_url(), "CREATE SCHEMA tenant").expect("create the schema");
    let store = open(&with(&database, "-csearch_path=tenant"));
    drop(store.expect("the search_path is the one asked for"));
    let made = "tenant: __diesel_schema_migrations, execution_events, task_executions";
    assert_eq!(tables(&database, &["public", "tenant"]), ["public: ", made]);
}

/// Index plans asked for and not made on the server: the connect fails naming the first
/// missing, nothing written; with them off, it opens.
pub fn planner_settings_missing_on_the_server_fail_the_connect() {
    let database = TempDatabase::with_connections(2, &[]);
    let err = open(database.pooled_url()).map(drop).unwrap_err();
    assert_settings_error(&err, ["enable_seqscan", "off", "on"], "ALTER ROLE");
    assert_eq!(tables(&database, &["public"]), ["public: "]);
    let options = PgOptions::new(database.pooled_url()).transaction_pooling(true);
    let store = options.index_plans(false).pool_size(1).connect();
    assert_writes(&store.expect("no planner settings asked for"));
}

/// Stores connecting at once to a new database through the proxy: one migrates (the lock is
/// transaction-scoped), every store opens on the same schema.
pub fn processes_connecting_at_once_migrate_once() {
    const STORES: u32 = 4;
    let database = TempDatabase::with_connections(STORES, &INDEX_PLAN_SETTINGS);
    let stores: Vec<PgStore> = std::thread::scope(|scope| {
        let opening: Vec<_> =
            (0..STORES).map(|_| scope.spawn(|| open(database.pooled_url()))).collect();
        opening.into_iter().map(|h| h.join().unwrap().expect("every store opens")).collect()
    });
    let task = assert_writes(&stores[0]);
    for store in &stores {
        assert_eq!(store.get(task.id).expect("read"), task);
    }
    assert_eq!(applied(database.direct_url()), versions().len());
}
