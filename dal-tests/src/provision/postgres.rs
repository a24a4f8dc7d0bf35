//! PostgreSQL: one server per test process, a new schema per fixture.
//!
//! The server is found in this order:
//! 1. `DATABASE_URL`, if set (a `postgres://` URL). Each fixture creates its own schema there
//!    and drops it afterwards, so tests are isolated and run in parallel.
//! 2. Otherwise, a PostgreSQL 15 container started with testcontainers, when a Docker daemon
//!    answers (the socket is checked first, which takes a millisecond).
//! 3. Otherwise the fixture panics with a message naming both options. PostgreSQL is never
//!    skipped silently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use dal_postgres::{Options, PostgresStore};
use diesel::{Connection, PgConnection, RunQueryDsl};

/// How to get a PostgreSQL server, for the failure message.
pub const HOW_TO: &str = "PostgreSQL is needed and none was found. Either set DATABASE_URL to a \
server the tests may create schemas in (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres), \
or run a Docker daemon so that testcontainers can start postgres:15 (checked at DOCKER_HOST or \
/var/run/docker.sock).";

/// The prefix of every schema the harness creates.
const SCHEMA_PREFIX: &str = "dal_test_";

struct Server {
    url: String,
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
    if let Ok(url) = std::env::var("DATABASE_URL") {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "DATABASE_URL must be a postgres:// URL for the tests, got {url:?}"
            ));
        }
        let server = Server { url };
        drop_orphan_schemas(&server);
        return Ok(server);
    }
    if docker_answers() {
        return start_container();
    }
    Err(HOW_TO.to_owned())
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
    Ok(Server { url })
}

#[cfg(not(feature = "containers"))]
fn start_container() -> Result<Server, String> {
    Err(format!(
        "a Docker daemon answers, but dal-tests was built without its `containers` feature. {HOW_TO}"
    ))
}

/// Stops the container, if one was started. Call at the end of a test or bench process (a
/// static is never dropped).
pub fn shutdown() {
    drop(CONTAINER.lock().unwrap_or_else(|e| e.into_inner()).take());
}

/// Drops schemas left behind by test processes that no longer run (a crash or a kill).
fn drop_orphan_schemas(server: &Server) {
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        nspname: String,
    }
    let Ok(mut conn) = PgConnection::establish(&server.url) else {
        return; // the first fixture reports the connection error
    };
    let names: Vec<Name> = diesel::sql_query(format!(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE '{SCHEMA_PREFIX}%'"
    ))
    .load(&mut conn)
    .unwrap_or_default();
    for Name { nspname } in names {
        let pid: Option<u32> = nspname
            .strip_prefix(SCHEMA_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse().ok());
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS \"{nspname}\" CASCADE"))
                .execute(&mut conn);
        }
    }
}

/// A schema of its own on the test server, dropped (with everything in it) on drop.
#[derive(Debug)]
pub struct TempSchema {
    name: String,
    url: String,
}

impl TempSchema {
    /// Creates a new schema on the test server.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let server = server();
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
        let separator = if server.url.contains('?') { '&' } else { '?' };
        // The application name lets a fault case find this schema's connections.
        let url = format!(
            "{}{separator}application_name={name}&options=-csearch_path%3D{name}",
            server.url
        );
        TempSchema { name, url }
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

    /// Options for a store in this schema.
    pub fn options(&self) -> Options {
        Options::new(self.url.clone())
    }

    /// Connects a store with `configure` applied to this schema's options.
    pub fn connect(&self, configure: impl FnOnce(Options) -> Options) -> PostgresStore {
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
