//! A transaction-pooling proxy (PgBouncer, `pool_mode = transaction`) in front of the test
//! server, for the suite's `pgbouncer` backend, and a database of its own per case behind it.
//!
//! The proxy is named by `DAL_TEST_POOLER` (a `postgres://` URL of it; the database part is
//! replaced by each case's), and must front the server the tests use
//! ([`super::postgres::server_url`]) with a fallback entry (`* = host=... port=...`) so that
//! every database is reachable through it. `.ci/pgbouncer` installs and starts one on a private
//! port and prints that URL. Without it, the `pgbouncer` cases are reported as ignored, and
//! [`unavailable`] says why.
//!
//! A proxy drops a client's `options` (its operators put `options` in
//! `ignore_startup_parameters`), so a case cannot work in a schema named by `search_path`:
//! each gets a database of its own instead, with the planner settings the store checks for
//! made on the database (`ALTER DATABASE ... SET`), as a production deployment makes them.

use std::sync::atomic::{AtomicU64, Ordering};

use diesel::{Connection, PgConnection, RunQueryDsl};

use super::postgres::{
    ADMIN_CONNECTIONS, ConnectionPermit, left_by_a_dead_process, reserve_connections, server_url,
    server_url_with, with_params,
};

/// The environment variable naming the proxy.
pub const POOLER_ENV: &str = "DAL_TEST_POOLER";

/// The prefix of the databases the cases create.
const DATABASE_PREFIX: &str = "dal_pooled_";

/// The proxy's URL, if one is configured.
pub fn pooler_url() -> Option<String> {
    std::env::var(POOLER_ENV).ok().filter(|url| !url.is_empty())
}

/// Why the `pgbouncer` cases cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if pooler_url().is_none() {
        return Some(format!(
            "no transaction-pooling proxy: set {POOLER_ENV} to a PgBouncer in front of the \
             test server (`bash .ci/pgbouncer` starts one and prints the URL)"
        ));
    }
    if std::env::var("DAL_TEST_SERVER").is_ok_and(|v| v == "private") {
        return Some(format!(
            "DAL_TEST_SERVER=private: the proxy of {POOLER_ENV} fronts another server"
        ));
    }
    None
}

/// A database of its own on the test server, reached through the proxy, dropped on drop (its
/// sessions, the proxy's among them, terminated first), and the connections reserved for it.
#[derive(Debug)]
pub struct TempDatabase {
    name: String,
    pooled_url: String,
    direct_url: String,
    // Released after the database is dropped.
    _permit: ConnectionPermit,
}

impl TempDatabase {
    /// Creates a database once the budget has `connections` for its stores: the proxy opens
    /// at most one server session per client connection in use. `settings` are made on the
    /// database (`name`, `value`) before anything connects to it.
    ///
    /// Panics without a proxy (see [`unavailable`]).
    pub fn with_connections(connections: u32, settings: &[(&str, &str)]) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let pooler = pooler_url().unwrap_or_else(|| panic!("{POOLER_ENV} is not set"));
        let permit = reserve_connections(connections + ADMIN_CONNECTIONS);
        let name = format!(
            "{DATABASE_PREFIX}{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = PgConnection::establish(server_url())
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", server_url()));
        static ORPHANS: std::sync::Once = std::sync::Once::new();
        ORPHANS.call_once(|| drop_orphans(&mut admin));
        diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .expect("create a test database");
        for (setting, value) in settings {
            diesel::sql_query(format!(
                "ALTER DATABASE \"{name}\" SET {setting} = '{value}'"
            ))
            .execute(&mut admin)
            .expect("a setting of the test database");
        }
        TempDatabase {
            pooled_url: with_params(&pooler, &[("dbname", &name)]),
            direct_url: server_url_with(&[("dbname", &name)]),
            name,
            _permit: permit,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database through the proxy.
    pub fn pooled_url(&self) -> &str {
        &self.pooled_url
    }

    /// The database on the server itself, for what a case does outside the store.
    pub fn direct_url(&self) -> &str {
        &self.direct_url
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = PgConnection::establish(server_url()) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin);
        }
    }
}

/// Drops the databases of test processes that no longer run (a crash or a kill).
fn drop_orphans(admin: &mut PgConnection) {
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let names: Vec<Name> = diesel::sql_query(format!(
        "SELECT datname FROM pg_database WHERE datname LIKE '{DATABASE_PREFIX}%'"
    ))
    .load(admin)
    .unwrap_or_default();
    for Name { datname } in names {
        if left_by_a_dead_process(&datname, DATABASE_PREFIX) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS \"{datname}\" WITH (FORCE)"
            ))
            .execute(admin);
        }
    }
}
