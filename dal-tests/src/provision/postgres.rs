//! PostgreSQL: one server per test process, a new schema per fixture. The server, said on
//! stderr: `DATABASE_URL`; else the first probe libpq reaches ([`PROBE_SECONDS`] each: libpq's
//! environment and defaults, the local socket, 127.0.0.1:5432 as `postgres`); else a private
//! cluster ([`super::cluster`]; `DAL_TEST_SERVER=private` goes there at once); else a
//! PostgreSQL 15 container when Docker answers; else a panic with [`HOW_TO`]. Fixtures reserve
//! their connections from a budget read from the server, so any number of threads fits.

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use diesel::connection::SimpleConnection;
use diesel::dsl::sql;
use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, PgConnection, RunQueryDsl};

/// How to get a PostgreSQL server, for the failure message.
pub const HOW_TO: &str = "PostgreSQL is needed and none was found. The tests looked for: \
DATABASE_URL (unset); a server at libpq's environment and defaults (PGHOST, PGPORT, PGUSER, \
PGPASSWORD, PGDATABASE, else the local socket), at the local socket as user postgres, and at \
127.0.0.1:5432 as user postgres (none answered); PostgreSQL binaries to start a private cluster \
with (initdb and pg_ctl, from pg_config --bindir, PATH or /usr/lib/postgresql/*/bin); and a Docker \
daemon for testcontainers (DOCKER_HOST or /var/run/docker.sock). Set DATABASE_URL to a server the \
tests may create schemas in (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres), \
install PostgreSQL (e.g. apt install postgresql), or start Docker.";

pub const PROBE_SECONDS: u32 = 2;

const SCHEMA_PREFIX: &str = "dal_test_";

/// A fixture's connections beside its stores': its schema's, a case's own (lock holder, SQL).
const ADMIN_CONNECTIONS: u32 = 2;

static SERVER: OnceLock<Result<(String, Budget), String>> = OnceLock::new();
static STARTED: Mutex<Option<Box<dyn Send>>> = Mutex::new(None);

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The connections this process may hold at once; `free` goes below zero for cases' extra stores.
#[derive(Debug)]
struct Budget {
    total: u32,
    free: Mutex<i64>,
    freed: Condvar,
}

#[derive(Debug)]
pub struct ConnectionPermit(&'static Budget, u32);

impl Budget {
    fn new(total: u32) -> Self {
        Budget { total, free: Mutex::new(total.into()), freed: Condvar::new() }
    }

    /// Takes `connections`, if `wait` once free (a request above the budget waits for all).
    fn take(&'static self, connections: u32, wait: bool) -> ConnectionPermit {
        let wanted = i64::from(connections.min(self.total));
        let free = self.freed.wait_while(locked(&self.free), |free| wait && *free < wanted);
        *free.unwrap_or_else(PoisonError::into_inner) -= i64::from(connections);
        ConnectionPermit(self, connections)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        *locked(&self.0.free) += i64::from(self.1);
        self.0.freed.notify_all();
    }
}

pub(crate) fn reserve_for_fixture(connections: u32) -> ConnectionPermit {
    server().1.take(connections + ADMIN_CONNECTIONS, true)
}

/// Connections for a store beside a fixture's, not waited for (waiting cases could deadlock).
pub fn reserve_connections(connections: u32) -> ConnectionPermit {
    server().1.take(connections, false)
}

/// `DAL_TEST_CONNECTIONS`, else `max_connections` less the reserved, other clients' and 10 spare.
fn budget(conn: &mut PgConnection) -> Result<Budget, String> {
    let total = if let Ok(set) = std::env::var("DAL_TEST_CONNECTIONS") {
        let wrong = format!("DAL_TEST_CONNECTIONS must be a number above {ADMIN_CONNECTIONS}");
        set.parse().ok().filter(|&n: &u32| n > ADMIN_CONNECTIONS).ok_or(wrong)?
    } else {
        let room: i64 = sql::<BigInt>(
            "SELECT current_setting('max_connections')::bigint \
             - current_setting('superuser_reserved_connections')::bigint \
             - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
        )
        .get_result(conn)
        .map_err(|e| format!("cannot read max_connections: {e}"))?;
        u32::try_from(room - 10).unwrap_or(0).max(12)
    };
    Ok(Budget::new(total))
}

fn server() -> &'static (String, Budget) {
    let server = SERVER.get_or_init(find_server).as_ref();
    server.unwrap_or_else(|message| panic!("{message}"))
}

/// The test server's URL, found (or started) on first use; else a panic with [`HOW_TO`].
pub fn server_url() -> &'static str {
    &server().0
}

fn execute_each(url: &str, statements: &[String]) -> Result<(), String> {
    let mut conn = PgConnection::establish(url).map_err(|e| format!("connect to {url}: {e}"))?;
    statements.iter().try_for_each(|s| conn.batch_execute(s).map_err(|e| format!("{s}: {e}")))
}

/// Runs `sql` (`;`-separated statements) at `url`, over a connection of its own.
pub fn execute(url: &str, sql: &str) -> Result<(), String> {
    execute_each(url, &[sql.to_owned()])
}

pub(crate) fn on_server(statements: &[String]) -> Result<(), String> {
    execute_each(server_url(), statements)
}

pub(crate) fn private() -> bool {
    std::env::var("DAL_TEST_SERVER").is_ok_and(|v| v == "private")
}

fn find_server() -> Result<(String, Budget), String> {
    if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|_| !private()) {
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(format!("DATABASE_URL must be a postgres:// URL, got {url:?}"));
        }
        let conn = PgConnection::establish(&url);
        let conn =
            conn.map_err(|e| format!("cannot connect to DATABASE_URL ({url}): {e}. {HOW_TO}"));
        return use_server("DATABASE_URL", url, conn?);
    }
    for (label, url) in probes().into_iter().filter(|_| !private()) {
        if let Ok(conn) = PgConnection::establish(&url) {
            return use_server(&label, url, conn);
        }
    }
    match super::cluster::start() {
        Ok(cluster) => {
            let (url, bindir) = (cluster.url(), cluster.bindir().display().to_string());
            let conn = PgConnection::establish(&url);
            let conn = conn.map_err(|e| format!("the private cluster does not answer: {e}"))?;
            *locked(&STARTED) = Some(Box::new(cluster));
            use_server(&format!("a private cluster of {bindir}"), url, conn)
        }
        Err(e) if private() => Err(format!("DAL_TEST_SERVER=private, but no private cluster: {e}")),
        Err(_) if docker_answers() => start_container(),
        Err(e) => Err(format!("{HOW_TO} (The private cluster: {e}.)")),
    }
}

/// The probes, in order: a label and a connection string (libpq's defaults first).
fn probes() -> Vec<(String, String)> {
    let vars = "PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE".split(' ');
    let set: Vec<String> =
        vars.filter_map(|v| Some(format!("{v}={}", std::env::var(v).ok()?))).collect();
    let libpq = match set.is_empty() {
        true => "libpq's defaults".to_owned(),
        false => format!("libpq's environment ({})", set.join(", ")),
    };
    let timeout = format!("connect_timeout={PROBE_SECONDS}");
    let mut probes = vec![(libpq, timeout.clone())];
    for dir in ["/var/run/postgresql", "/tmp"] {
        if std::path::Path::new(dir).join(".s.PGSQL.5432").exists() {
            let url = format!("postgres://postgres@{}/postgres?{timeout}", dir.replace('/', "%2F"));
            probes.push((format!("the local socket in {dir} as postgres"), url));
        }
    }
    let url = format!("postgres://postgres@127.0.0.1:5432/postgres?{timeout}");
    probes.push(("127.0.0.1:5432 as postgres".to_owned(), url));
    probes
}

/// Takes the server at `url`: drops dead processes' schemas, reads the budget, says which it is.
fn use_server(
    label: &str,
    url: String,
    mut conn: PgConnection,
) -> Result<(String, Budget), String> {
    drop_orphans(&mut conn, "SELECT nspname::text FROM pg_namespace", SCHEMA_PREFIX, drop_schema);
    let budget = budget(&mut conn)?;
    eprintln!("PostgreSQL for the tests: {label}, at most {} connections at once", budget.total);
    Ok((url, budget))
}

/// Drops (`drop`'s statement) each name `names` selects that a dead test process left.
pub(crate) fn drop_orphans(
    conn: &mut PgConnection,
    names: &str,
    prefix: &str,
    drop: fn(&str) -> String,
) {
    let names: Vec<String> = sql::<Text>(names).load(conn).unwrap_or_default();
    for name in names.iter().filter(|name| super::orphaned(name, prefix)) {
        let _ = conn.batch_execute(&drop(name));
    }
}

fn drop_schema(name: &str) -> String {
    format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")
}

/// `base` (a `postgres://` URL or a libpq keyword/value string) with `params` added.
pub fn with_params(base: &str, params: &[(&str, &str)]) -> String {
    let mut out = base.to_owned();
    let url = base.starts_with("postgres://") || base.starts_with("postgresql://");
    for (key, value) in params {
        if url {
            out.push(if out.contains('?') { '&' } else { '?' });
            out += &format!("{key}={}", value.replace('=', "%3D").replace(' ', "%20"));
        } else {
            let value = value.replace('\\', "\\\\").replace('\'', "\\'");
            out += &format!(" {key}='{value}'");
        }
    }
    out
}

/// Schema `name` at `base`: its search path, `extra` settings, its name as application name.
fn schema_url(base: &str, name: &str, extra: &str) -> String {
    let options = format!("-csearch_path={name} {extra}");
    let params = [("application_name", name), ("options", options.trim_end())];
    with_params(base, &params)
}

/// Whether a Docker daemon listens on `DOCKER_HOST` (unix or tcp) or the default socket.
fn docker_answers() -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    if let Some(addr) = host.strip_prefix("tcp://") {
        let timeout = std::time::Duration::from_millis(200);
        let addr = addr.to_socket_addrs().ok().and_then(|mut a| a.next());
        return addr.is_some_and(|addr| TcpStream::connect_timeout(&addr, timeout).is_ok());
    }
    let socket = host.strip_prefix("unix://");
    std::os::unix::net::UnixStream::connect(socket.unwrap_or("/var/run/docker.sock")).is_ok()
}

#[cfg(feature = "containers")]
fn start_container() -> Result<(String, Budget), String> {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::{ImageExt, runners::SyncRunner};

    let started = Postgres::default().with_tag("15-alpine").start();
    let container = started.map_err(|e| format!("starting postgres:15 failed: {e}. {HOW_TO}"))?;
    let (port, host) = (container.get_host_port_ipv4(5432), container.get_host());
    let (port, host) = (port.map_err(|e| e.to_string())?, host.map_err(|e| e.to_string())?);
    let url = format!("postgres://postgres:postgres@{host}:{port}/postgres");
    *locked(&STARTED) = Some(Box::new(container));
    // The server in the container may still be starting: 50 attempts, 200 ms apart.
    let pause = |_| std::thread::sleep(std::time::Duration::from_millis(200));
    let conn = (0..50).find_map(|_| PgConnection::establish(&url).map_err(pause).ok());
    let conn = conn.ok_or("the PostgreSQL container does not answer")?;
    use_server("a testcontainers postgres:15", url, conn)
}

#[cfg(not(feature = "containers"))]
fn start_container() -> Result<(String, Budget), String> {
    Err(format!("Docker answers; dal-tests is built without `containers`. {HOW_TO}"))
}

/// Removes the cluster or container the process started (statics are never dropped).
pub fn shutdown() {
    drop(locked(&STARTED).take());
}

/// A schema of its own (its name its sessions' `application_name`), dropped on drop.
#[derive(Debug)]
pub struct TempSchema {
    name: String,
    url: String,
    // Released after the schema is dropped.
    _permit: ConnectionPermit,
}

impl TempSchema {
    /// Creates a schema once the budget has `connections` for its stores.
    pub fn with_connections(connections: u32) -> Self {
        let _permit = reserve_for_fixture(connections);
        let name = super::unique_name(SCHEMA_PREFIX);
        let created = on_server(&[format!("CREATE SCHEMA \"{name}\"")]);
        created.unwrap_or_else(|e| panic!("cannot create a test schema: {e}. {HOW_TO}"));
        TempSchema { url: schema_url(server_url(), &name, ""), name, _permit }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// [`url`](Self::url) with more session settings (e.g. `-c lock_timeout=100`).
    pub fn url_with_options(&self, extra: &str) -> String {
        schema_url(server_url(), &self.name, extra)
    }

    /// Terminates the sessions of stores on this schema; returns how many.
    pub fn terminate_connections(&self) -> usize {
        let Ok(mut conn) = PgConnection::establish(server_url()) else { return 0 };
        let terminate = sql::<BigInt>("SELECT count(pg_terminate_backend(pid)) ")
            .sql("FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND application_name = ")
            .bind::<Text, _>(&self.name);
        let terminated: Result<i64, _> = terminate.get_result(&mut conn);
        terminated.map_or(0, |n| usize::try_from(n).unwrap_or(0))
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        let _ = on_server(&[drop_schema(&self.name)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A reservation waits until the budget has it, given back on any thread; more for a case
    /// is taken without waiting; a request larger than the budget waits for all of it.
    #[test]
    fn a_budget_lends_what_it_has_and_waits_for_the_rest() {
        let new = |total| &*Box::leak(Box::new(Budget::new(total)));
        let free = |budget: &Budget| *locked(&budget.free);
        let budget = new(10);
        let first = budget.take(8, true);
        let (sent, got) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || sent.send(budget.take(5, true)).unwrap());
        // Still waiting: 2 free, 5 wanted.
        assert!(got.recv_timeout(Duration::from_millis(200)).is_err());
        std::thread::spawn(move || drop(first)).join().unwrap();
        drop(got.recv_timeout(Duration::from_secs(10)).unwrap());
        waiter.join().unwrap();
        assert_eq!(free(budget), 10);

        let fixture = budget.take(8, true);
        let more = budget.take(6, false);
        assert_eq!(free(budget), -4);
        drop((more, fixture));
        assert_eq!(free(budget), 10);

        let small = new(4);
        let permit = small.take(7, true);
        assert_eq!(free(small), -3);
        drop(permit);
        assert_eq!(free(small), 4);
    }
}
