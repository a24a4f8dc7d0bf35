//! A throwaway PostgreSQL cluster from the machine's binaries, on a socket in a temporary
//! directory only; removed on drop, by its watcher once the process ends, or by the next
//! process that starts one. As root, it runs as `postgres` (`runuser`).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const DIR_PREFIX: &str = "dal_test_pg_";

/// `fsync` and `full_page_writes` off: only a crash of the machine loses data.
const SERVER_OPTIONS: &str =
    "-c listen_addresses='' -c max_connections=100 -c fsync=off -c full_page_writes=off";

#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
}

impl Cluster {
    pub fn url(&self) -> String {
        let socket = self.dir.to_string_lossy().replace('/', "%2F");
        format!("postgres://postgres@{socket}/postgres")
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// Runs `pg_ctl <args>` on the cluster; `Err` with its output on failure.
    pub fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let dir = self.dir.display();
        let files = [format!("--pgdata={dir}/data"), format!("--log={dir}/server.log")];
        run(command(&self.bindir, "pg_ctl", args).args(files))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Starts a private cluster, or says why not.
pub fn start() -> Result<Cluster, String> {
    let bindir = find_bindir().ok_or(
        "no PostgreSQL binaries (initdb and pg_ctl) found by pg_config --bindir, on PATH or in \
         /usr/lib/postgresql/*/bin",
    )?;
    for dir in fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        if super::orphaned(&dir.file_name().to_string_lossy(), DIR_PREFIX) {
            drop(Cluster { dir: dir.path(), bindir: bindir.clone() });
        }
    }
    let dir = std::env::temp_dir().join(super::unique_name(DIR_PREFIX));
    fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Removed on drop when a step below fails.
    let cluster = Cluster { dir, bindir };
    if is_root() {
        run(Command::new("chown").arg("postgres:").arg(&cluster.dir))?;
    }
    let initdb = ["-Upostgres", "-Atrust", "-EUTF8", "--no-sync", "-D"];
    run(command(&cluster.bindir, "initdb", &initdb).arg(cluster.dir.join("data")))?;
    // The watcher ignores the signals a terminal sends the process group (Ctrl-C).
    let quote = |p: &Path| format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"));
    let script = format!(
        "trap '' INT TERM HUP; while kill -0 {parent} 2>/dev/null; do sleep 1; done; \
         {runuser} {pg_ctl} stop -m immediate -w -D {data} >/dev/null 2>&1; rm -rf {dir}",
        parent = std::process::id(),
        runuser = if is_root() { "runuser -u postgres --" } else { "" },
        pg_ctl = quote(&cluster.bindir.join("pg_ctl")),
        data = quote(&cluster.dir.join("data")),
        dir = quote(&cluster.dir),
    );
    let mut watcher = Command::new("sh");
    watcher.args(["-c", &script]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    watcher.spawn().map_err(|e| format!("cannot start the cluster's watcher: {e}"))?;
    let options = format!("-k {} {SERVER_OPTIONS}", cluster.dir.display());
    cluster.pg_ctl(&["start", "-w", "-t", "60", "-o", &options])?;
    Ok(cluster)
}

/// The directory of `initdb` and `pg_ctl`: `DAL_TEST_PG_BINDIR`, `pg_config --bindir`, `PATH`,
/// else the newest `/usr/lib/postgresql/<version>/bin`.
pub fn find_bindir() -> Option<PathBuf> {
    let has_both = |dir: &PathBuf| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("DAL_TEST_PG_BINDIR") {
        return Some(PathBuf::from(dir)).filter(has_both);
    }
    let pg_config = Command::new("pg_config").arg("--bindir").output().ok();
    let pg_config = pg_config.filter(|out| out.status.success());
    let pg_config = pg_config.map(|out| String::from_utf8_lossy(&out.stdout).trim().into());
    let path = std::env::var_os("PATH").unwrap_or_default();
    let version = |dir: &PathBuf| dir.file_name()?.to_str()?.parse::<u32>().ok();
    let debian = fs::read_dir("/usr/lib/postgresql").into_iter().flatten();
    let mut debian: Vec<PathBuf> = debian.flatten().map(|entry| entry.path()).collect();
    debian.sort_by_key(|dir| std::cmp::Reverse(version(dir)));
    let candidates = pg_config.into_iter().chain(std::env::split_paths(&path));
    candidates.chain(debian.into_iter().map(|dir| dir.join("bin"))).find(has_both)
}

fn command(bindir: &Path, program: &str, args: &[&str]) -> Command {
    let program = bindir.join(program);
    let mut cmd = Command::new(if is_root() { Path::new("runuser") } else { &program });
    if is_root() {
        cmd.args(["-u", "postgres", "--"]).arg(&program);
    }
    cmd.args(args);
    cmd
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let text = |bytes| String::from_utf8_lossy(bytes).trim().to_owned();
    let failed =
        format!("{cmd:?} failed ({}): {}{}", out.status, text(&out.stdout), text(&out.stderr));
    out.status.success().then_some(()).ok_or(failed)
}

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(test)]
mod tests {
    use diesel::{Connection, PgConnection, RunQueryDsl};

    #[test]
    fn a_private_cluster_answers_on_its_socket_and_is_removed() {
        let cluster = super::start().expect("a private cluster (needs initdb and pg_ctl)");
        let mut conn = PgConnection::establish(&cluster.url()).expect("connect");
        let settings = "SELECT current_setting('listen_addresses') || '|' || current_user";
        let found: diesel::QueryResult<String> =
            diesel::dsl::sql::<diesel::sql_types::Text>(settings).get_result(&mut conn);
        assert_eq!(found.expect("read the settings"), "|postgres");
        drop(conn);
        let dir = cluster.dir.clone();
        assert!(dir.join("data").join("PG_VERSION").is_file());
        drop(cluster);
        assert!(!dir.exists(), "{} is left", dir.display());
    }
}
