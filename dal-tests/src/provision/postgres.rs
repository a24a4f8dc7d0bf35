//! PostgreSQL: one server per test process, a new schema per fixture.
//!
//! The server is found in this order, and one line on stderr says which was used:
//! 1. `DATABASE_URL`, if set (a `postgres://` URL).
//! 2. A server libpq users would reach, probed with one short connection attempt each
//!    ([`PROBE_SECONDS`]): libpq's own environment and defaults (`PGHOST`, `PGPORT`, `PGUSER`,
//!    `PGPASSWORD`, `PGDATABASE`, ...; else the local socket as the operating-system user),
//!    then the local socket as user `postgres`, then 127.0.0.1:5432 as user `postgres`.
//! 3. A private, throwaway cluster made with the PostgreSQL binaries installed on the machine
//!    ([`cluster`](super::cluster)): `initdb` in a temporary directory, a server on a socket in
//!    it, stopped and removed when the test process ends.
//! 4. A PostgreSQL 15 container started with testcontainers, when a Docker daemon answers (the
//!    socket is checked first, which takes a millisecond).
//! 5. Otherwise the fixture panics with a message naming all of the above ([`HOW_TO`]).
//!    PostgreSQL is never skipped silently.
//!
//! `DAL_TEST_SERVER=private` skips 1 and 2 and uses a private cluster (`.ci/run` runs the
//! PostgreSQL cases that way too). The restart cases start private clusters of their own.
//!
//! Each fixture creates its own schema on the server and drops it afterwards, so tests are
//! isolated and run in parallel. The connections a test process opens stay within a budget
//! read from the server once ([`connection_budget`]): every [`TempSchema`] reserves the
//! connections its stores will open before it creates its schema, and waits while the budget is
//! spent, so a suite with any number of test threads fits a server's `max_connections`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError};
use std::thread::ThreadId;

use dal_postgres::{PgOptions, PgStore};
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

/// Seconds each probe of step 2 may take to connect.
pub const PROBE_SECONDS: u32 = 2;

/// The prefix of every schema the harness creates.
const SCHEMA_PREFIX: &str = "dal_test_";

struct Server {
    url: String,
    budget: &'static Budget,
    /// The private cluster, when the tests started one.
    cluster: Option<super::cluster::Cluster>,
}

/// Connections a [`TempSchema`] keeps for itself: creating and dropping the schema, and a
/// case's own connections beside its stores' pools (a lock holder, raw SQL).
pub(crate) const ADMIN_CONNECTIONS: u32 = 2;

/// Connections left to other clients of the server when the budget is computed.
const SPARE_CONNECTIONS: i64 = 10;

/// The connections this process may hold on the test server at once, and who holds them.
struct Budget {
    total: u32,
    state: Mutex<Holders>,
    freed: Condvar,
}

/// The free connections (below zero while nested reservations overdraw), and what each thread
/// that reserved holds.
#[derive(Default)]
struct Holders {
    free: i64,
    held: HashMap<ThreadId, u32>,
}

/// Connections reserved from a budget by one thread, released on drop (on any thread).
pub struct ConnectionPermit {
    budget: &'static Budget,
    thread: ThreadId,
    connections: u32,
}

impl fmt::Debug for ConnectionPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionPermit")
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl Budget {
    /// A budget that lives as long as the process (the server it belongs to is a static).
    fn leaked(total: u32) -> &'static Self {
        Box::leak(Box::new(Budget::new(total)))
    }

    fn new(total: u32) -> Self {
        Budget {
            total,
            state: Mutex::new(Holders {
                free: i64::from(total),
                held: HashMap::new(),
            }),
            freed: Condvar::new(),
        }
    }

    /// Reserves `connections`, waiting until the budget has them. A thread that already holds
    /// a reservation (a case opening a second store) takes more without waiting, so two cases
    /// can never each hold part of the budget while waiting for the other's; that overdraft is
    /// bounded by what one case opens.
    fn reserve(&'static self, connections: u32) -> ConnectionPermit {
        let thread = std::thread::current().id();
        let wanted = i64::from(connections.min(self.total));
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.held.contains_key(&thread) {
            while state.free < wanted {
                state = self
                    .freed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        state.free -= i64::from(connections);
        *state.held.entry(thread).or_default() += connections;
        ConnectionPermit {
            budget: self,
            thread,
            connections,
        }
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let budget = self.budget;
        let mut state = budget.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.free += i64::from(self.connections);
        if let Some(held) = state.held.get_mut(&self.thread) {
            *held = held.saturating_sub(self.connections);
            if *held == 0 {
                state.held.remove(&self.thread);
            }
        }
        budget.freed.notify_all();
    }
}

/// How many connections the test process may hold on the server at once: the server's
/// `max_connections`, less its `superuser_reserved_connections`, the connections other clients
/// hold when the process starts, and a spare 10; `DAL_TEST_CONNECTIONS` sets it instead.
pub fn connection_budget() -> u32 {
    server().budget.total
}

/// Reserves `connections` from the budget for a store a case opens beside its fixture's (see
/// [`connection_budget`]); hold the permit as long as the store.
pub fn reserve_connections(connections: u32) -> ConnectionPermit {
    server().budget.reserve(connections)
}

/// Reads the budget from the server over `conn` (see [`connection_budget`]).
fn read_budget(conn: &mut PgConnection) -> Result<u32, String> {
    #[derive(diesel::QueryableByName)]
    struct Room {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        room: i64,
    }
    if let Ok(set) = std::env::var("DAL_TEST_CONNECTIONS") {
        return set
            .parse()
            .ok()
            .filter(|&n: &u32| n > ADMIN_CONNECTIONS)
            .ok_or_else(|| {
                format!(
                    "DAL_TEST_CONNECTIONS must be a number above {ADMIN_CONNECTIONS}, got {set:?}"
                )
            });
    }
    let Room { room } = diesel::sql_query(
        "SELECT current_setting('max_connections')::bigint \
              - current_setting('superuser_reserved_connections')::bigint \
              - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') \
              AS room",
    )
    .get_result(conn)
    .map_err(|e| format!("cannot read max_connections: {e}"))?;
    // At least enough for one case with a default pool, whatever the server says.
    Ok(u32::try_from(room - SPARE_CONNECTIONS).unwrap_or(0).max(12))
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

#[cfg(feature = "containers")]
type Container =
    testcontainers_modules::testcontainers::Container<testcontainers_modules::postgres::Postgres>;
#[cfg(not(feature = "containers"))]
type Container = ();

static CONTAINER: Mutex<Option<Container>> = Mutex::new(None);

fn server() -> &'static Server {
    match SERVER.get_or_init(find_server) {
        Ok(server) => server,
        Err(message) => panic!("{message}"),
    }
}

/// The URL of the server the tests use, found (or started) on first use. Panics with
/// [`HOW_TO`] when there is none.
pub fn server_url() -> &'static str {
    &server().url
}

fn find_server() -> Result<Server, String> {
    let private = std::env::var("DAL_TEST_SERVER").is_ok_and(|v| v == "private");
    if !private {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(format!(
                    "DATABASE_URL must be a postgres:// URL for the tests, got {url:?}"
                ));
            }
            let conn = PgConnection::establish(&url)
                .map_err(|e| format!("cannot connect to DATABASE_URL ({url}): {e}. {HOW_TO}"))?;
            return use_server("DATABASE_URL".to_owned(), url, conn, None);
        }
        for (label, url) in probes() {
            if let Ok(conn) = PgConnection::establish(&url) {
                return use_server(label, url, conn, None);
            }
        }
    }
    let failed = match super::cluster::start() {
        Ok(cluster) => {
            let url = cluster.url();
            let label = format!("a private cluster of {}", cluster.bindir().display());
            return match PgConnection::establish(&url) {
                Ok(conn) => use_server(label, url, conn, Some(cluster)),
                Err(e) => {
                    cluster.remove();
                    Err(format!("the private cluster does not answer at {url}: {e}"))
                }
            };
        }
        Err(e) => e,
    };
    if private {
        return Err(format!(
            "DAL_TEST_SERVER=private, but no private cluster: {failed}"
        ));
    }
    if docker_answers() {
        return start_container();
    }
    Err(format!("{HOW_TO} (The private cluster: {failed}.)"))
}

/// The servers of step 2, in order: a label and a connection string.
fn probes() -> Vec<(String, String)> {
    let set: Vec<String> = [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGDATABASE",
        "PGSERVICE",
    ]
    .into_iter()
    .filter_map(|v| std::env::var(v).ok().map(|value| format!("{v}={value}")))
    .collect();
    let environment = if set.is_empty() {
        "libpq's defaults".to_owned()
    } else {
        format!("libpq's environment ({})", set.join(", "))
    };
    // An empty keyword/value string is libpq's environment and defaults; the timeout keyword
    // bounds the probe.
    let mut probes = vec![(environment, format!("connect_timeout={PROBE_SECONDS}"))];
    for socket_dir in ["/var/run/postgresql", "/tmp"] {
        if std::path::Path::new(socket_dir)
            .join(".s.PGSQL.5432")
            .exists()
        {
            probes.push((
                format!("the local socket in {socket_dir} as postgres"),
                format!(
                    "postgres://postgres@{}/postgres?connect_timeout={PROBE_SECONDS}",
                    socket_dir.replace('/', "%2F")
                ),
            ));
        }
    }
    probes.push((
        "127.0.0.1:5432 as postgres".to_owned(),
        format!("postgres://postgres@127.0.0.1:5432/postgres?connect_timeout={PROBE_SECONDS}"),
    ));
    probes
}

/// Takes the server at `url` (reached over `conn`) for the tests: drops the schemas of test
/// processes that no longer run, reads the connection budget and says which server it is.
fn use_server(
    label: String,
    url: String,
    mut conn: PgConnection,
    cluster: Option<super::cluster::Cluster>,
) -> Result<Server, String> {
    drop_orphan_schemas(&mut conn);
    let budget = read_budget(&mut conn)?;
    eprintln!("PostgreSQL for the tests: {label}, at most {budget} connections at once");
    Ok(Server {
        url,
        budget: Budget::leaked(budget),
        cluster,
    })
}

/// The connection string of schema `name` on the server at `base`: its search path and `extra`
/// settings, and the schema's name as the application name (so that a fault case can find
/// this schema's connections).
fn schema_url(base: &str, name: &str, extra: &str) -> String {
    let options = match extra {
        "" => format!("-csearch_path={name}"),
        extra => format!("-csearch_path={name} {extra}"),
    };
    with_params(base, &[("application_name", name), ("options", &options)])
}

/// `base` (a `postgres://` URL or a libpq keyword/value string) with `params` added.
pub fn with_params(base: &str, params: &[(&str, &str)]) -> String {
    let mut out = base.to_owned();
    if base.starts_with("postgres://") || base.starts_with("postgresql://") {
        for (key, value) in params {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(&format!(
                "{key}={}",
                value.replace('=', "%3D").replace(' ', "%20")
            ));
        }
    } else {
        for (key, value) in params {
            let value = value.replace('\\', "\\\\").replace('\'', "\\'");
            out.push_str(&format!(" {key}='{value}'"));
        }
    }
    out
}

/// The test server's URL with more connection parameters (e.g. `("dbname", "other")`), which
/// take the place of the URL's own.
pub fn server_url_with(params: &[(&str, &str)]) -> String {
    with_params(server_url(), params)
}

/// Whether a Docker daemon listens on `DOCKER_HOST` (unix or tcp) or the default socket.
pub fn docker_answers() -> bool {
    use std::time::Duration;
    let host = std::env::var("DOCKER_HOST").unwrap_or_default();
    if let Some(addr) = host.strip_prefix("tcp://") {
        use std::net::ToSocketAddrs;
        return addr
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .is_some_and(|addr| {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
    }
    let socket = host
        .strip_prefix("unix://")
        .unwrap_or("/var/run/docker.sock");
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

#[cfg(feature = "containers")]
fn start_container() -> Result<Server, String> {
    use testcontainers_modules::postgres::Postgres;
    use testcontainers_modules::testcontainers::ImageExt;
    use testcontainers_modules::testcontainers::runners::SyncRunner;

    let container = Postgres::default()
        .with_tag("15-alpine")
        .start()
        .map_err(|e| format!("Docker answers, but starting postgres:15 failed: {e}. {HOW_TO}"))?;
    let port = container
        .get_host_port_ipv4(5432)
        .map_err(|e| format!("the PostgreSQL container has no port: {e}"))?;
    let host = container
        .get_host()
        .map_err(|e| format!("the PostgreSQL container has no host: {e}"))?;
    let url = format!("postgres://postgres:postgres@{host}:{port}/postgres");
    *CONTAINER.lock().unwrap_or_else(|e| e.into_inner()) = Some(container);
    let budget = connect_with_retries(&url).and_then(|mut conn| read_budget(&mut conn))?;
    eprintln!(
        "PostgreSQL for the tests: a testcontainers postgres:15, at most {budget} connections at once"
    );
    Ok(Server {
        url,
        budget: Budget::leaked(budget),
        cluster: None,
    })
}

#[cfg(not(feature = "containers"))]
fn start_container() -> Result<Server, String> {
    Err(format!(
        "a Docker daemon answers, but dal-tests was built without its `containers` feature. {HOW_TO}"
    ))
}

/// Stops the container or the private cluster, if one was started. Call at the end of a test or
/// bench process (a static is never dropped; a private cluster's watcher removes it anyway).
pub fn shutdown() {
    if let Some(Ok(Server {
        cluster: Some(cluster),
        ..
    })) = SERVER.get()
    {
        cluster.remove();
    }
    // The taken container, if any, is dropped (stopped) at the end of the statement.
    let _ = CONTAINER.lock().unwrap_or_else(|e| e.into_inner()).take();
}

/// A connection to a container that may still be starting.
#[cfg(feature = "containers")]
fn connect_with_retries(url: &str) -> Result<PgConnection, String> {
    let mut last = String::new();
    for _ in 0..50 {
        match PgConnection::establish(url) {
            Ok(conn) => return Ok(conn),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Err(format!("the PostgreSQL container does not answer: {last}"))
}

/// Whether `name` (`<prefix><pid>_...`) was made by a test process that no longer runs.
pub(crate) fn left_by_a_dead_process(name: &str, prefix: &str) -> bool {
    let pid: Option<u32> = name
        .strip_prefix(prefix)
        .and_then(|rest| rest.split('_').next())
        .and_then(|pid| pid.parse().ok());
    !pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// Drops schemas left behind by test processes that no longer run (a crash or a kill).
fn drop_orphan_schemas(conn: &mut PgConnection) {
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        nspname: String,
    }
    let names: Vec<Name> = diesel::sql_query(format!(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE '{SCHEMA_PREFIX}%'"
    ))
    .load(conn)
    .unwrap_or_default();
    for Name { nspname } in names {
        if left_by_a_dead_process(&nspname, SCHEMA_PREFIX) {
            let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS \"{nspname}\" CASCADE"))
                .execute(conn);
        }
    }
}

/// A schema of its own on the test server, dropped (with everything in it) on drop, and the
/// connections reserved for it from the budget (see [`connection_budget`]).
#[derive(Debug)]
pub struct TempSchema {
    name: String,
    url: String,
    // Released after the schema is dropped.
    _permit: ConnectionPermit,
}

impl TempSchema {
    /// Creates a new schema on the test server, with connections reserved for one store with
    /// the default pool (10).
    pub fn new() -> Self {
        TempSchema::with_connections(10)
    }

    /// Creates a new schema on the test server, once the budget has `connections` for the
    /// stores that will use it (their pool sizes), and the schema's own.
    pub fn with_connections(connections: u32) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let server = server();
        let permit = server.budget.reserve(connections + ADMIN_CONNECTIONS);
        let name = format!(
            "{SCHEMA_PREFIX}{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = PgConnection::establish(&server.url)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}. {HOW_TO}", server.url));
        diesel::sql_query(format!("CREATE SCHEMA \"{name}\""))
            .execute(&mut conn)
            .expect("create a test schema");
        let url = schema_url(&server.url, &name, "");
        TempSchema {
            name,
            url,
            _permit: permit,
        }
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Terminates every server connection of stores on this schema (`pg_terminate_backend`),
    /// and returns how many there were. For fault injection.
    pub fn terminate_connections(&self) -> usize {
        #[derive(diesel::QueryableByName)]
        struct Terminated {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let Ok(mut conn) = PgConnection::establish(&server().url) else {
            return 0;
        };
        diesel::sql_query(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind::<diesel::sql_types::Text, _>(&self.name)
        .get_result::<Terminated>(&mut conn)
        .map_or(0, |t| usize::try_from(t.n).unwrap_or(0))
    }

    /// A URL whose connections use this schema (`search_path`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// [`url`](Self::url) with more server settings for its sessions, as `options` takes them
    /// (e.g. `-c lock_timeout=100`); the same URL when `extra` is empty.
    pub fn url_with_options(&self, extra: &str) -> String {
        schema_url(&server().url, &self.name, extra)
    }

    /// PgOptions for a store in this schema.
    pub fn options(&self) -> PgOptions {
        PgOptions::new(self.url.clone())
    }

    /// Connects a store with `configure` applied to this schema's options.
    pub fn connect(&self, configure: impl FnOnce(PgOptions) -> PgOptions) -> PgStore {
        configure(self.options())
            .connect()
            .expect("connect a PostgreSQL store to a test schema")
    }
}

impl Default for TempSchema {
    fn default() -> Self {
        TempSchema::new()
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        if let Ok(mut conn) = PgConnection::establish(&server().url) {
            let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name))
                .execute(&mut conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn free(budget: &Budget) -> i64 {
        budget.state.lock().map(|s| s.free).unwrap_or(i64::MIN)
    }

    fn nobody_holds(budget: &Budget) -> bool {
        budget.state.lock().is_ok_and(|s| s.held.is_empty())
    }

    #[test]
    fn parameters_join_a_url_or_a_keyword_string() {
        let params = [("application_name", "s1"), ("options", "-csearch_path=s1")];
        assert_eq!(
            with_params("postgres://u@h/db", &params),
            "postgres://u@h/db?application_name=s1&options=-csearch_path%3Ds1"
        );
        assert_eq!(
            with_params("postgres://u@h/db?connect_timeout=2", &params[1..]),
            "postgres://u@h/db?connect_timeout=2&options=-csearch_path%3Ds1"
        );
        assert_eq!(
            with_params("connect_timeout=2", &[("options", "-c a='b c'")]),
            "connect_timeout=2 options='-c a=\\'b c\\''"
        );
    }

    #[test]
    fn a_schema_url_sets_the_search_path_and_the_extra_settings() {
        assert_eq!(
            schema_url("postgres://u@h/db", "s1", "-c lock_timeout=100"),
            "postgres://u@h/db?application_name=s1&options=-csearch_path%3Ds1%20-c%20lock_timeout%3D100"
        );
        assert_eq!(
            schema_url("connect_timeout=2", "s1", ""),
            "connect_timeout=2 application_name='s1' options='-csearch_path=s1'"
        );
    }

    #[test]
    fn the_probes_end_at_the_default_address() {
        let probes = probes();
        assert!(probes[0].1.starts_with("connect_timeout="), "{probes:?}");
        assert_eq!(
            probes.last().map(|(_, url)| url.as_str()),
            Some("postgres://postgres@127.0.0.1:5432/postgres?connect_timeout=2")
        );
    }

    #[test]
    fn a_reservation_waits_until_the_budget_has_it() {
        let budget = Budget::leaked(10);
        let first = budget.reserve(8);
        assert_eq!(free(budget), 2);
        let (sent, got) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let permit = budget.reserve(5);
            sent.send(()).ok();
            drop(permit);
        });
        // Still waiting: 2 free, 5 wanted.
        assert!(got.recv_timeout(Duration::from_millis(200)).is_err());
        drop(first);
        assert!(got.recv_timeout(Duration::from_secs(10)).is_ok());
        waiter.join().ok();
        assert_eq!(free(budget), 10);
    }

    #[test]
    fn a_thread_holding_a_reservation_takes_more_without_waiting() {
        let budget = Budget::leaked(10);
        let fixture = budget.reserve(8);
        let nested = budget.reserve(6);
        assert_eq!(free(budget), -4);
        drop(nested);
        drop(fixture);
        assert_eq!(free(budget), 10);
        assert!(nobody_holds(budget));
    }

    #[test]
    fn a_permit_dropped_on_another_thread_releases_its_holder() {
        let budget = Budget::leaked(10);
        let permit = budget.reserve(10);
        std::thread::spawn(move || drop(permit)).join().ok();
        assert_eq!(free(budget), 10);
        assert!(nobody_holds(budget));
        // This thread holds nothing now, so it waits like any other: 10 are free.
        drop(budget.reserve(10));
        assert_eq!(free(budget), 10);
    }

    #[test]
    fn a_request_larger_than_the_budget_waits_for_all_of_it() {
        let budget = Budget::leaked(4);
        let permit = budget.reserve(7);
        assert_eq!(free(budget), -3);
        drop(permit);
        assert_eq!(free(budget), 4);
    }
}
