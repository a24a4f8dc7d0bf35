//! PgBouncer in transaction pooling before the test server (`DAL_TEST_POOLER`, which
//! `.ci/pgbouncer` prints), a database per case behind it; the proxy drops `options`, so
//! settings are made on the database (`ALTER DATABASE ... SET`), as in production.

use std::sync::Once;

use diesel::{Connection, PgConnection};

use super::postgres::{ConnectionPermit, drop_orphans, on_server, private, reserve_for_fixture};
use super::postgres::{server_url, with_params};

const POOLER_ENV: &str = "DAL_TEST_POOLER";

const DATABASE_PREFIX: &str = "dal_pooled_";

fn pooler_url() -> Option<String> {
    std::env::var(POOLER_ENV).ok().filter(|url| !url.is_empty())
}

/// Why the cases behind the proxy cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    match pooler_url() {
        None => Some(format!(
            "no transaction-pooling proxy: set {POOLER_ENV} (`bash .ci/pgbouncer` prints one)"
        )),
        Some(_) if private() => {
            Some(format!("DAL_TEST_SERVER=private; {POOLER_ENV} fronts another"))
        }
        Some(_) => None,
    }
}

fn drop_database(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")
}

/// A database of its own, reached through the proxy, dropped (sessions and all) on drop.
#[derive(Debug)]
pub struct TempDatabase {
    name: String,
    pooled_url: String,
    direct_url: String,
    // Released after the database is dropped.
    _permit: ConnectionPermit,
}

impl TempDatabase {
    /// Creates a database once the budget has `connections`, with `settings` made on it before
    /// anything connects. Panics without a proxy.
    pub fn with_connections(connections: u32, settings: &[(&str, &str)]) -> Self {
        let pooler = pooler_url().unwrap_or_else(|| panic!("{POOLER_ENV} is not set"));
        let _permit = reserve_for_fixture(connections);
        static ORPHANS: Once = Once::new();
        ORPHANS.call_once(|| {
            if let Ok(mut conn) = PgConnection::establish(server_url()) {
                let names = "SELECT datname::text FROM pg_database";
                drop_orphans(&mut conn, names, DATABASE_PREFIX, drop_database);
            }
        });
        let name = super::unique_name(DATABASE_PREFIX);
        let set =
            settings.iter().map(|(s, v)| format!("ALTER DATABASE \"{name}\" SET {s} = '{v}'"));
        let statements: Vec<_> =
            [format!("CREATE DATABASE \"{name}\"")].into_iter().chain(set).collect();
        on_server(&statements).expect("create a test database");
        let pooled_url = with_params(&pooler, &[("dbname", &name)]);
        let direct_url = with_params(server_url(), &[("dbname", &name)]);
        TempDatabase { name, pooled_url, direct_url, _permit }
    }

    pub fn pooled_url(&self) -> &str {
        &self.pooled_url
    }

    pub fn direct_url(&self) -> &str {
        &self.direct_url
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        let _ = on_server(&[drop_database(&self.name)]);
    }
}
