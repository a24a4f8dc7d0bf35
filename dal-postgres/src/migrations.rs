//! The schema's migrations: applied at connect (the default), verified, or applied as a step of
//! their own ([`crate::PgOptions::migrate`]), and their SQL for review ([`migrations_sql`]).

use dal_core::Result;
use dal_diesel::open::{MIGRATIONS_TABLE, MigrateError, applied, apply, check_applied, versions};
use diesel::{Connection, PgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

/// The schema migrations, embedded in the binary and applied by [`crate::PgOptions::connect`]
/// (or [`crate::PgOptions::migrate`]).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The key of the advisory lock that serializes migrations between processes.
const MIGRATION_LOCK: i64 = 0x7461_736b_5f64_616c; // "task_dal"

/// `(name, up.sql)` of each migration directory named.
macro_rules! migration_sql {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../migrations/", $name, "/up.sql")))),*]
    };
}

/// Every migration's `(name, up.sql)`, oldest first: the same files [`MIGRATIONS`] embeds (a
/// test checks that the two lists name the same migrations).
const MIGRATION_SQL: &[(&str, &str)] = migration_sql![
    "2026-11-26-000000_create_task_executions",
    "2026-11-26-000001_claims",
    "2026-11-26-000002_execution_events",
    "2026-11-26-000003_status_index",
    "2026-11-26-000004_inline_event_data",
    "2026-11-26-000005_queue_at_scale",
    "2026-12-02-000006_sub_status",
    "2026-12-08-000007_event_key",
];

/// Applies the pending migrations on `conn` in one transaction holding a transaction-scoped
/// advisory lock, so processes connecting at once do not race (behind a transaction pooler
/// too: the lock lives and ends with the transaction). The session's `lock_timeout` does not
/// apply to it: another process's migration is waited for, not failed on. Returns the
/// versions applied.
pub(crate) fn migrate(conn: &mut PgConnection) -> Result<Vec<String>> {
    conn.transaction(|conn| {
        diesel::sql_query("SET LOCAL lock_timeout = 0").execute(conn)?;
        diesel::select(pg_advisory_xact_lock(MIGRATION_LOCK)).execute(conn)?;
        apply(conn, MIGRATIONS)
    })
    .map_err(|err: MigrateError| err.into())
}

/// Fails with [`dal_core::DalError::SchemaNotMigrated`] unless every migration of
/// [`MIGRATIONS`] is applied on `conn`. Two `SELECT`s; no DDL right needed.
pub(crate) fn verify(conn: &mut PgConnection) -> Result<()> {
    let present =
        applied(conn, "SELECT to_regclass('__diesel_schema_migrations') IS NOT NULL AS present")?;
    check_applied(versions::<diesel::pg::Pg>(&MIGRATIONS)?, present)
}

/// The SQL that migrating an empty database runs, for a DBA to review: each migration in
/// order, in the one transaction and under the lock [`crate::PgOptions::migrate`] takes, with
/// the bookkeeping of Diesel's [`MIGRATIONS_TABLE`] that marks it applied.
pub fn migrations_sql() -> String {
    let mut out = format!(
        "-- The migrations of dal-postgres {}, oldest first, as PgOptions::migrate applies them to\n\
         -- an empty schema, in one transaction (on a schema migrated before, it applies only\n\
         -- those whose version {MIGRATIONS_TABLE} does not list).\n\
         BEGIN;\n\
         SET LOCAL lock_timeout = 0;\n\
         SELECT pg_advisory_xact_lock({MIGRATION_LOCK});\n\
         CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (\n    \
             version VARCHAR(50) PRIMARY KEY NOT NULL,\n    \
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP\n);\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, up) in MIGRATION_SQL {
        let version: String = name
            .split('_')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        out.push_str(&format!(
            "\n-- {}\n{}\nINSERT INTO {MIGRATIONS_TABLE} (version) VALUES ('{version}');\n",
            name,
            up.trim_end()
        ));
    }
    out.push_str("\nCOMMIT;\n");
    out
}

diesel::define_sql_function! {
    /// Takes a transaction-scoped advisory lock.
    fn pg_advisory_xact_lock(key: diesel::sql_types::BigInt);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listed_sql_is_every_embedded_migration_in_order() {
        let embedded = versions::<diesel::pg::Pg>(&MIGRATIONS).expect("the embedded migrations");
        let listed: Vec<String> = MIGRATION_SQL
            .iter()
            .map(|(name, _)| name.split('_').next().unwrap_or_default().replace('-', ""))
            .collect();
        assert_eq!(listed, embedded);
        let sql = migrations_sql();
        for ((name, up), version) in MIGRATION_SQL.iter().zip(&embedded) {
            assert!(sql.contains(up.trim_end()), "{name}");
            assert!(sql.contains(&format!("VALUES ('{version}');")), "{version}");
        }
        assert!(sql.starts_with("-- The migrations of dal-postgres"));
        assert!(sql.ends_with("COMMIT;\n"));
    }
}
