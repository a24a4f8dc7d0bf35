//! A private, throwaway PostgreSQL cluster, made from the PostgreSQL binaries installed on the
//! machine when no server answers: `initdb` in a temporary directory, the server listening on a
//! socket in that directory only (no TCP port), stopped and removed when the test process ends.
//!
//! The end of the process is watched by a small shell process started with the cluster (its
//! parent is the test process): once the parent is gone, however it ended (a normal exit, a
//! panic, `kill -9`), the watcher stops the server and removes the directory within a second.
//! A cluster whose watcher was killed too (Ctrl-C reaches the whole process group) is removed
//! by the next test process that starts one ([`remove_orphans`]).
//!
//! PostgreSQL refuses to run as root; a root test process (CI) runs `initdb`, `pg_ctl` and the
//! server as the `postgres` account with `runuser`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The prefix of every cluster directory, followed by the owning process's id.
const DIR_PREFIX: &str = "dal_test_pg_";

/// The server settings of a private cluster: the default connection limit, as on a default
/// server, and a test server's durability. `fsync` and `full_page_writes` off lose data only when
/// the machine itself goes down (what is written reaches the operating system, which keeps it
/// when the server process dies); a crash of the server (`pg_ctl restart -m immediate`) loses
/// no committed transaction. `synchronous_commit` stays on: off, a commit is acknowledged
/// before its WAL is written, and a crash of the server loses it (the restart case found
/// exactly that: a claim reported done, gone after the restart).
const SERVER_OPTIONS: &str =
    "-c listen_addresses='' -c max_connections=100 -c fsync=off -c full_page_writes=off";

/// A running private cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The temporary directory: `data/`, the server's socket and logs.
    dir: PathBuf,
    /// Where `initdb` and `pg_ctl` are.
    bindir: PathBuf,
    /// The account the server runs as when the test process is root.
    run_as: Option<&'static str>,
}

impl Cluster {
    /// The URL of the cluster's `postgres` database, as the `postgres` role, over its socket.
    pub fn url(&self) -> String {
        let socket = self.dir.to_string_lossy().replace('/', "%2F");
        format!("postgres://postgres@{socket}/postgres")
    }

    /// Where the binaries came from, for the line that says which server the tests use.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// The cluster's data directory, for `pg_ctl` (restarts in fault cases).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `pg_ctl <args> -D <data dir>` as the server's account; `Err` with its output on failure.
    pub fn pg_ctl(&self, args: &[&str]) -> Result<(), String> {
        let data = self.data_dir();
        let log = self.dir.join("server.log");
        let mut all: Vec<&str> = args.to_vec();
        let (data, log) = (data.to_string_lossy(), log.to_string_lossy());
        all.extend(["-D", &data, "-l", &log]);
        run(self.command("pg_ctl", &all))
    }

    /// Stops the server at once and removes the directory.
    pub fn remove(&self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        let _ = fs::remove_dir_all(&self.dir);
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        command(&self.bindir, self.run_as, program, args)
    }
}

/// Starts a private cluster, or says why not (no binaries, `initdb` or the start failed).
pub fn start() -> Result<Cluster, String> {
    remove_orphans();
    let bindir = find_bindir().ok_or(
        "no PostgreSQL binaries (initdb and pg_ctl) found by pg_config --bindir, on PATH or in \
         /usr/lib/postgresql/*/bin",
    )?;
    let run_as = if is_root() { Some("postgres") } else { None };
    let dir = std::env::temp_dir().join(format!(
        "{DIR_PREFIX}{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cluster = Cluster {
        dir,
        bindir,
        run_as,
    };
    match initialize(&cluster) {
        Ok(()) => Ok(cluster),
        Err(e) => {
            cluster.remove();
            Err(e)
        }
    }
}

fn initialize(cluster: &Cluster) -> Result<(), String> {
    if let Some(account) = cluster.run_as {
        let (uid, gid) = account_ids(account)
            .ok_or_else(|| format!("running as root, and there is no {account:?} account"))?;
        std::os::unix::fs::chown(&cluster.dir, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to {account}: {e}", cluster.dir.display()))?;
    }
    let data = cluster.data_dir();
    let data = data.to_string_lossy();
    run(cluster.command(
        "initdb",
        &[
            "-D",
            &data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
    ))?;
    watch(cluster)?;
    let socket = cluster.dir.to_string_lossy();
    let options = format!("-k {socket} {SERVER_OPTIONS}");
    cluster.pg_ctl(&["start", "-w", "-t", "60", "-o", &options])
}

/// Starts the watcher: a shell that waits for the test process to end, then stops the server
/// and removes the directory. It ignores the signals a terminal sends the process group, so
/// that Ctrl-C on the tests still cleans up.
fn watch(cluster: &Cluster) -> Result<(), String> {
    let quote = |p: &Path| format!("'{}'", p.to_string_lossy().replace('\'', "'\\''"));
    let pg_ctl = quote(&cluster.bindir.join("pg_ctl"));
    let stop = match cluster.run_as {
        Some(account) => format!("runuser -u {account} -- {pg_ctl}"),
        None => pg_ctl,
    };
    let script = format!(
        "trap '' INT TERM HUP; while kill -0 {parent} 2>/dev/null; do sleep 1; done; \
         {stop} stop -m immediate -w -D {data} >/dev/null 2>&1; rm -rf {dir}",
        parent = std::process::id(),
        data = quote(&cluster.data_dir()),
        dir = quote(&cluster.dir),
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|e| format!("cannot start the cluster's watcher: {e}"))
}

/// Removes the clusters of test processes that no longer run.
fn remove_orphans() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let bindir = find_bindir();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let owner_is_root = entry.metadata().is_ok_and(|m| m.uid() == 0);
        if let Some(bindir) = &bindir {
            let run_as = if is_root() && !owner_is_root {
                Some("postgres")
            } else {
                None
            };
            let data = entry.path().join("data");
            let data = data.to_string_lossy();
            let _ = run(command(
                bindir,
                run_as,
                "pg_ctl",
                &["stop", "-m", "immediate", "-w", "-D", &data],
            ));
        }
        let _ = fs::remove_dir_all(entry.path());
    }
}

/// The directory holding `initdb` and `pg_ctl`: `DAL_TEST_PG_BINDIR` when set (`.ci/postgres`
/// prints one), else `pg_config --bindir`, else the first such
/// directory on `PATH`, else the newest `/usr/lib/postgresql/<version>/bin` (Debian, Ubuntu).
pub fn find_bindir() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("DAL_TEST_PG_BINDIR").map(PathBuf::from) {
        return has_both(&dir).then_some(dir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|d| has_both(d)) {
        return Some(dir);
    }
    if let Some(dir) = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| has_both(dir))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_both(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

fn command(bindir: &Path, run_as: Option<&str>, program: &str, args: &[&str]) -> Command {
    let program = bindir.join(program);
    match run_as {
        Some(account) => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", account, "--"]).arg(program).args(args);
            cmd
        }
        None => {
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
    }
}

/// Runs `cmd` to its end; `Err` with its output when it fails.
fn run(mut cmd: Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// Whether this process runs as root (the owner of `/proc/self` is the effective user).
fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The user and group ids of `account`, from `/etc/passwd`.
fn account_ids(account: &str) -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            [name, _, uid, gid, ..] if *name == account => {
                Some((uid.parse().ok()?, gid.parse().ok()?))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::{Connection, PgConnection, RunQueryDsl};

    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        setting: String,
    }

    #[test]
    fn a_private_cluster_answers_on_its_socket_and_is_removed() {
        let cluster = start().expect("a private cluster (needs initdb and pg_ctl)");
        let mut conn = PgConnection::establish(&cluster.url()).expect("connect");
        let Setting { setting } = diesel::sql_query(
            "SELECT current_setting('listen_addresses') || '|' || current_user AS setting",
        )
        .get_result(&mut conn)
        .expect("read the settings");
        assert_eq!(setting, "|postgres");
        drop(conn);
        let dir = cluster.dir.clone();
        assert!(dir.join("data").join("PG_VERSION").is_file());
        cluster.remove();
        assert!(!dir.exists(), "{} is left", dir.display());
    }

    #[test]
    fn the_binaries_are_found() {
        let bindir = find_bindir().expect("initdb and pg_ctl");
        assert!(bindir.join("initdb").is_file() && bindir.join("pg_ctl").is_file());
    }
}
