//! The workload killed (`SIGKILL`) mid-run, finished by `--resume` (on SQLite after a resume killed
//! too), its checks passing, SQLite's `integrity_check` ok; a second workload, and a new run on a
//! database holding one, refused at once. (What `--resume` reads: `workload_checks.rs`.)
#![allow(clippy::expect_used, clippy::panic)] // a failed setup is a failed test

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use dal_benches::workload::{args::Args, db::Conn, db::Db, db::Recorder, db::Target};
use diesel::{QueryableByName, RunQueryDsl, sql_types::Text};
use serde_json::Value;

/// 6 creation batches of 1,000 tasks a second apart, runners slower (600 tasks/s), so that each
/// kill finds work left and claims held; stale after 200 ms; retention on.
const RUN: &str = "--quiet --workflows 600 --runners 2 --work-us 3000 --create-pause-ms 1000 \
                   --stale-after-ms 200 --sweep-every-ms 20 --prune-every-ms 100 --retain-ms 300 \
                   --fail-rate 0.1 --crash-rate 0.1 --seed 7";

fn workload(location: &[&str], more: &str) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_workload"));
    let command = command.args(location).args(more.split_whitespace()).stdin(Stdio::null());
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn")
}

/// Waits for `child` to end, for at most `limit`.
fn ended(mut child: Child, limit: Duration) -> std::process::Output {
    poll(limit, || child.try_wait().expect("poll the workload").is_some());
    child.wait_with_output().expect("the workload's output")
}

/// Waits until `done`, for at most `limit`.
fn poll(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() <= deadline, "nothing happened in {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a workload that must be refused at once, `because`.
fn refused(location: &[&str], because: &str) {
    let output = ended(workload(location, "--quiet"), Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.code() == Some(2) && stderr.contains(because), "{stderr}");
}

/// Waits until the run has recorded `batches` creation batches, `child` still running.
fn wait_for(recorder: &mut Recorder, child: &mut Child, batches: u64) {
    poll(Duration::from_secs(180), || {
        let made = recorder.read().ok().flatten().is_some_and(|r| r.created_batches >= batches);
        assert!(made || child.try_wait().expect("poll the workload").is_none(), "the run ended");
        made
    });
}

/// Kills the run after 2 of its 6 batches (a second workload and a new run refused), then
/// `resumes_killed` resumes once all exist; returns the report of the last resume, all passed.
fn killed_and_resumed(location: &[&str], resumes_killed: usize) -> Value {
    let target = Target::open(&Args::parse_from(["workload"].iter().chain(location)));
    let mut recorder = Recorder::open(&target.expect("the database").db).expect("the record");
    let kill = |mut child: Child| child.kill().and_then(|()| child.wait()).expect("kill -9");
    let mut run = workload(location, RUN);
    wait_for(&mut recorder, &mut run, 1);
    refused(location, "another workload is working on");
    wait_for(&mut recorder, &mut run, 2);
    kill(run);
    refused(location, "finish it with --resume");
    for _ in 0..resumes_killed {
        let mut resume = workload(location, "--quiet --resume");
        wait_for(&mut recorder, &mut resume, 6);
        kill(resume);
    }
    let dir = tempfile::tempdir().expect("a directory");
    let json = dir.path().join("report.json");
    let more = format!("--quiet --resume --json {}", json.display());
    let output = ended(workload(location, &more), Duration::from_secs(300));
    let (stdout, stderr) =
        (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{stdout}{stderr}");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).expect("read")).expect("json");
    let checks = report["checks"].as_array().map(Vec::len);
    assert!(report["passed"] == true && checks == Some(7), "{stdout}");
    // Its runners waited for the dead process's claims to go stale, with nothing else to do.
    assert!(report["outcomes"]["empty_claims"].as_u64() > Some(0), "{stdout}");
    let (created, elapsed) = (report["creation_s"].as_f64(), report["elapsed_s"].as_f64());
    assert!(Some(0.0) < created && created <= elapsed, "{stdout}");
    report
}

#[test]
fn a_sqlite_run_killed_twice_is_finished_by_a_third_process() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("crash.db");
    let url = format!("sqlite://{}", path.display());
    let report = killed_and_resumed(&["--database-url", &url], 1);
    assert_eq!(report["resumed"]["workflows_to_create"], 0);
    #[derive(QueryableByName)]
    struct Integrity {
        #[diesel(sql_type = Text)]
        integrity_check: String,
    }
    let Ok(Conn::Sqlite(mut conn)) = Db::Sqlite(path).connect() else { panic!("the file") };
    let integrity = diesel::sql_query("PRAGMA integrity_check").load::<Integrity>(&mut conn);
    let first = integrity.expect("check").into_iter().next();
    assert_eq!(first.map(|r| r.integrity_check), Some("ok".into()));
}

#[test]
fn a_postgres_run_killed_mid_run_is_finished_by_a_new_process() {
    use dal_tests::provision::postgres::{TempSchema, server_url};
    // Two runs' pools (runners + 2) and their lock, record and footprint sessions.
    let schema = TempSchema::with_connections(16);
    let location = ["--database-url", server_url(), "--schema", schema.name()];
    let report = killed_and_resumed(&location, 0);
    assert!(report["resumed"]["workflows_to_create"].as_u64() > Some(0));
}
