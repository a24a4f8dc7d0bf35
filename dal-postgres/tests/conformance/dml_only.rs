//! `dal-postgres` as a deployment with migrations as a step of their own runs it: each case's
//! schema is migrated first by the server's user ([`dal_postgres::PgOptions::migrate`]), and
//! the stores connect as a role with only DML rights on it (`SELECT`, `INSERT`, `UPDATE`,
//! `DELETE`: no `CREATE`, not the tables' owner), with
//! [`dal_postgres::Migrations::Verify`]. The whole suite runs this way, and the migration
//! step's own cases.

use dal_core::{DalError, TaskStore};
use dal_postgres::Migrations;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::factory::{Postgres, ROLE, Schema, as_role, ensure_role};
use dal_tests::operations::Statements;
use dal_tests::provision::postgres::TempSchema;
use dal_tests::suite::{LockTimeout, TestBackend, TestDatabase};

/// PostgreSQL with a DML-only role and migrations verified.
#[derive(Debug, Clone, Copy)]
pub struct DmlOnly;

impl TestBackend for DmlOnly {
    as_postgres!();

    fn name(&self) -> &'static str {
        "postgres_dml_only"
    }

    /// PostgreSQL's column: the role changes no statement.
    fn title(&self) -> &'static str {
        Postgres.title()
    }

    fn database(&self, connections: u32) -> Box<dyn TestDatabase> {
        Box::new(Schema::new(connections, Some(ROLE)))
    }

    fn prepared_per_connection(&self) -> usize {
        Postgres.prepared_per_connection()
    }

    fn prepared_per_prune_batch(&self) -> usize {
        Postgres.prepared_per_prune_batch()
    }
}

/// The migration step's own cases.
pub const CASES: &[(&str, fn())] = &[
    (
        "verified_migrations_missing_fail_the_connect_and_nothing_is_written",
        verified_migrations_missing_fail_the_connect_and_nothing_is_written,
    ),
    (
        "the_migration_step_applies_each_migration_once",
        the_migration_step_applies_each_migration_once,
    ),
    (
        "the_dml_only_role_cannot_migrate",
        the_dml_only_role_cannot_migrate,
    ),
    (
        "the_printed_sql_migrates_a_schema_the_store_verifies",
        the_printed_sql_migrates_a_schema_the_store_verifies,
    ),
    (
        "skipped_migrations_are_neither_applied_nor_checked",
        skipped_migrations_are_neither_applied_nor_checked,
    ),
];

/// Every migration version of this build, oldest first.
fn versions() -> Vec<String> {
    diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&dal_postgres::MIGRATIONS)
        .expect("the embedded migrations")
        .iter()
        .map(|m| m.name().version().to_string())
        .collect()
}

/// How many relations `schema` holds.
fn relations_in(schema: &TempSchema) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(schema.url()).expect("connect");
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1",
    )
    .bind::<diesel::sql_types::Text, _>(schema.name())
    .get_result::<Count>(&mut conn)
    .expect("pg_class")
    .n
}

fn expect_not_migrated(result: Result<dal_postgres::PgStore, DalError>, pending: &[String]) {
    match result.map(drop) {
        Err(DalError::SchemaNotMigrated { pending: found }) => assert_eq!(found, pending),
        other => panic!("expected SchemaNotMigrated, got {other:?}"),
    }
}

/// A schema never migrated, and one lacking the newest migration: `Verify` names what is
/// missing, applies nothing, and the schema stays as it was.
fn verified_migrations_missing_fail_the_connect_and_nothing_is_written() {
    let schema = TempSchema::with_connections(1);
    let verify = || {
        dal_postgres::PgOptions::new(schema.url())
            .pool_size(1)
            .migrations(Migrations::Verify)
            .connect()
    };
    let all = versions();
    expect_not_migrated(verify(), &all);
    assert_eq!(relations_in(&schema), 0);

    dal_postgres::PgOptions::new(schema.url())
        .migrate()
        .expect("migrate");
    let newest = all.last().expect("a migration").clone();
    let mut conn = PgConnection::establish(schema.url()).expect("connect");
    diesel::sql_query("DELETE FROM __diesel_schema_migrations WHERE version = $1")
        .bind::<diesel::sql_types::Text, _>(&newest)
        .execute(&mut conn)
        .expect("forget the newest migration");
    let before = relations_in(&schema);
    expect_not_migrated(verify(), std::slice::from_ref(&newest));
    assert_eq!(relations_in(&schema), before);
    let err = verify().map(drop).expect_err("still missing");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(&newest), "{err}");
}

/// The step applies every migration, oldest first, then none; a store verifying them opens.
fn the_migration_step_applies_each_migration_once() {
    let schema = TempSchema::with_connections(1);
    let step = || dal_postgres::PgOptions::new(schema.url()).migrate();
    assert_eq!(step().expect("first step"), versions());
    assert_eq!(step().expect("second step"), Vec::<String>::new());
    let store = dal_postgres::PgOptions::new(schema.url())
        .pool_size(1)
        .migrations(Migrations::Verify)
        .connect()
        .expect("every migration applied");
    let task = store
        .create(&dal_core::NewTaskExecution::new(Uuid::now_v7(), "verified"))
        .expect("create");
    assert_eq!(store.get(task.id).expect("get"), task);
}

/// The role the suite runs as has no right to run DDL: migrating a fresh schema as that role
/// fails with `Migration`, and leaves the schema empty.
fn the_dml_only_role_cannot_migrate() {
    ensure_role();
    let schema = TempSchema::with_connections(1);
    let mut admin = PgConnection::establish(schema.url()).expect("connect");
    admin
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA \"{}\" TO {ROLE}",
            schema.name()
        ))
        .expect("grant usage");
    let err = dal_postgres::PgOptions::new(as_role(schema.url()))
        .pool_size(1)
        .connect()
        .map(drop)
        .expect_err("a DML-only role cannot create tables");
    assert!(matches!(err, DalError::Migration { .. }), "{err:?}");
    assert_eq!(relations_in(&schema), 0);
}

/// What `migrations_sql` prints, run as a DBA would run it (one batch, `psql -f`), makes a
/// schema that a store verifying the migrations opens and writes to; run twice, it fails
/// rather than apply a migration twice.
fn the_printed_sql_migrates_a_schema_the_store_verifies() {
    let schema = TempSchema::with_connections(1);
    let sql = dal_postgres::migrations_sql();
    let mut admin = PgConnection::establish(schema.url()).expect("connect");
    admin.batch_execute(&sql).expect("the printed SQL runs");
    let store = dal_postgres::PgOptions::new(schema.url())
        .pool_size(1)
        .migrations(Migrations::Verify)
        .connect()
        .expect("the printed SQL applied every migration");
    let task = store
        .create(&dal_core::NewTaskExecution::new(Uuid::now_v7(), "printed"))
        .expect("create");
    assert_eq!(store.get(task.id).expect("get"), task);
    drop(store);
    assert_eq!(
        dal_postgres::PgOptions::new(schema.url())
            .migrate()
            .expect("nothing left to apply"),
        Vec::<String>::new()
    );
    let mut again = PgConnection::establish(schema.url()).expect("connect");
    assert!(again.batch_execute(&sql).is_err(), "applied twice");
}

/// `Skip`: an empty schema opens (nothing applied, nothing checked), and the first write then
/// fails on the missing table.
fn skipped_migrations_are_neither_applied_nor_checked() {
    let schema = TempSchema::with_connections(1);
    let store = dal_postgres::PgOptions::new(schema.url())
        .pool_size(1)
        .migrations(Migrations::Skip)
        .connect()
        .expect("no migration checked");
    assert_eq!(relations_in(&schema), 0);
    let err = store
        .create(&dal_core::NewTaskExecution::new(Uuid::now_v7(), "skipped"))
        .expect_err("no table");
    assert!(matches!(err, DalError::Database { .. }), "{err:?}");
}
