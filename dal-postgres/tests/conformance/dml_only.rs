//! Migrations as a step of their own (`PgOptions::migrate`, `migrations_sql`), verified or
//! skipped at connect, and a DML-only role (as `Postgres::DmlOnly` runs the model cases).

use dal_core::DalError;
use dal_postgres::{Migrations, PgOptions, PgStore};
use diesel::connection::SimpleConnection;
use diesel::sql_types::BigInt;

use crate::factory::{ROLE, as_role, assert_writes, connect, execute, select, versions};
use dal_tests::provision::postgres::TempSchema;

fn relations_in(schema: &TempSchema) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = '{}'",
        schema.name()
    );
    select::<BigInt, _>(&mut connect(schema.url()), &sql)
}

fn open(url: &str, m: Migrations) -> Result<PgStore, DalError> {
    PgOptions::new(url).pool_size(1).migrations(m).connect()
}

/// Verifying `schema` fails naming `pending`, not retryable, and changes nothing.
fn assert_pending(schema: &TempSchema, pending: &[String]) {
    let before = relations_in(schema);
    let err = open(schema.url(), Migrations::Verify).map(drop).unwrap_err();
    let named = matches!(&err, DalError::SchemaNotMigrated { pending: p } if p == pending);
    assert!(named && !err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains(&pending[0]), "{err}");
    assert_eq!(relations_in(schema), before);
}

/// A schema never migrated, and one lacking the newest migration: `Verify` names what is
/// missing and changes nothing.
pub fn verified_migrations_missing_fail_the_connect_and_nothing_is_written() {
    let schema = TempSchema::with_connections(1);
    let all = versions();
    assert_pending(&schema, &all);
    assert_eq!(relations_in(&schema), 0);
    PgOptions::new(schema.url()).migrate().expect("migrate");
    let newest = &all[all.len() - 1..];
    let forget = format!("DELETE FROM __diesel_schema_migrations WHERE version = '{}'", newest[0]);
    execute(schema.url(), &forget).expect("forget the newest migration");
    assert_pending(&schema, newest);
}

/// The step applies every migration, oldest first, then none; a store verifying them opens.
pub fn the_migration_step_applies_each_migration_once() {
    let schema = TempSchema::with_connections(1);
    let step = || PgOptions::new(schema.url()).migrate().expect("the step");
    assert_eq!(step(), versions());
    assert_eq!(step(), Vec::<String>::new());
    assert_writes(&open(schema.url(), Migrations::Verify).expect("every migration applied"));
}

/// Migrating a fresh schema as the DML-only role fails with `Migration`, the schema left empty.
pub fn the_dml_only_role_cannot_migrate() {
    let schema = TempSchema::with_connections(1);
    let url = as_role(schema.url());
    let usage = format!("GRANT USAGE ON SCHEMA \"{}\" TO {ROLE}", schema.name());
    execute(schema.url(), &usage).expect("grant usage");
    let err = open(&url, Migrations::Apply).map(drop).unwrap_err();
    assert!(matches!(err, DalError::Migration { .. }), "{err:?}");
    assert_eq!(relations_in(&schema), 0);
}

/// What `migrations_sql` prints, run as one batch, makes a schema a verifying store opens and
/// writes to; run twice, it fails rather than apply a migration twice.
pub fn the_printed_sql_migrates_a_schema_the_store_verifies() {
    let schema = TempSchema::with_connections(1);
    let sql = dal_postgres::migrations_sql();
    execute(schema.url(), &sql).expect("the printed SQL runs");
    let verified = open(schema.url(), Migrations::Verify);
    assert_writes(&verified.expect("the printed SQL applied every migration"));
    let step = PgOptions::new(schema.url()).migrate();
    assert_eq!(step.expect("nothing left to apply"), Vec::<String>::new());
    let again = connect(schema.url()).batch_execute(&sql);
    assert!(again.is_err(), "applied twice");
}

/// `Skip`: an empty schema opens as it is, and the first write fails on the missing table.
pub fn skipped_migrations_are_neither_applied_nor_checked() {
    let schema = TempSchema::with_connections(1);
    let store = open(schema.url(), Migrations::Skip).expect("nothing checked");
    assert_eq!(relations_in(&schema), 0);
    let new = dal_core::NewTaskExecution::new(uuid::Uuid::now_v7(), "skipped");
    let err = dal_core::TaskStore::create(&store, &new).unwrap_err();
    assert!(matches!(err, DalError::Database { .. }), "{err:?}");
}
