//! The workload process killed (`SIGKILL`) mid-run, then finished by `--resume`: on a SQLite
//! file (the first resume killed too, a third process finishing) and on PostgreSQL. The
//! finishing run's checks pass over the whole run, what it says it found is what the database
//! held after the kill, and SQLite's `integrity_check` is ok. A second workload on a database in
//! use is refused at once, and so is a new run on a database that holds one.
#![allow(clippy::expect_used, clippy::panic)] // a failed setup is a failed test

use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use clap::Parser;
use dal_benches::workload::target::{Conn, Db, Target};
use dal_benches::workload::{args::Args, ledger::workflow_id, record::Recorder};
use dal_core::{History, StatusCounts, TaskExecutionStore};
use diesel::{QueryableByName, RunQueryDsl, sql_types::BigInt, sql_types::Text};
use serde_json::Value;

/// 6 creation batches of 1,000 tasks a second apart, runners slower than creation (3 ms per
/// task, about 600 tasks/s for the two) so that each kill finds work left; stale claims
/// recovered after 200 ms; retention on.
const RUN: &str = "--quiet --workflows 600 --runners 2 --work-us 3000 --create-pause-ms 1000 \
                   --stale-after-ms 200 --sweep-every-ms 20 --prune-every-ms 100 --retain-ms 300 \
                   --fail-rate 0.1 --crash-rate 0.1 --seed 7";

fn workload(location: &[&str], more: &str) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_workload"));
    command
        .args(location)
        .args(more.split_whitespace())
        .stdin(Stdio::null());
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the workload")
}

/// Runs a workload that must be refused at once, `because`.
fn refused(location: &[&str], because: &str) {
    let (started, child) = (Instant::now(), workload(location, "--quiet"));
    let output = child.wait_with_output().expect("run the workload");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code() == Some(2) && stderr.contains(because),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The creation batches made, and the tasks by status.
type Progress = (u64, StatusCounts);

/// Tasks created that finished or were removed.
fn done((batches, counts): &Progress) -> u64 {
    let unfinished = (counts.not_started + counts.ready + counts.running) as u64;
    (batches * 1_000).saturating_sub(unfinished)
}

/// The run's database, watched from outside.
struct Watch {
    target: Target,
    recorder: Recorder,
    store: Box<dyn TaskExecutionStore>,
}

impl Watch {
    /// The run's progress, once it has recorded itself.
    fn progress(&mut self) -> Option<Progress> {
        let batches = self.recorder.read().ok()??.created_batches;
        Some((
            batches,
            self.store.count_by_status().expect("count the tasks"),
        ))
    }

    /// Kills `child` once `ready` holds of the run's progress, and returns the progress then.
    fn kill_when(
        &mut self,
        mut child: Child,
        mut ready: impl FnMut(&Progress) -> bool,
    ) -> Progress {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !self.progress().is_some_and(|progress| ready(&progress)) {
            let running = child.try_wait().expect("poll").is_none();
            assert!(
                running && Instant::now() < deadline,
                "the run ended or stalled"
            );
            sleep(Duration::from_millis(10));
        }
        child.kill().expect("kill -9 the workload");
        child.wait().expect("reap the workload");
        let db = &self.target.db;
        if let (Db::Postgres(_, schema, _), Ok(Conn::Pg(mut conn))) = (db, db.connect()) {
            // A statement running when its client died still commits: wait for those to end.
            let sql = "SELECT count(*) AS n FROM pg_stat_activity \
                       WHERE application_name = $1 AND state <> 'idle'";
            let active = diesel::sql_query(sql).bind::<Text, _>(schema);
            let mut busy = || {
                active
                    .clone()
                    .get_result::<Count>(&mut conn)
                    .expect("read")
                    .n
                    > 0
            };
            while busy() {
                sleep(Duration::from_millis(10));
            }
        }
        self.progress().expect("the run's progress after the kill")
    }
}

/// Kills the run `kills` times, the first while half its batches are still to be made (a
/// second workload refused meanwhile), then each resume once every batch exists; then resumes
/// it to the end and returns the report, after checking that it passed and found what the
/// last kill left.
fn killed_and_resumed(location: &[&str], kills: usize) -> Value {
    let target = Target::open(&Args::parse_from(["workload"].iter().chain(location)));
    let target = target.expect("the database");
    let recorder = Recorder::connect(&target.db).expect("the record");
    let store = target
        .connect(1, History::Kept, &Default::default())
        .expect("a store");
    let mut watch = Watch {
        target,
        recorder,
        store,
    };
    let mut refused_meanwhile = false;
    let mut left = watch.kill_when(workload(location, RUN), |progress| {
        if progress.0 >= 1 && !refused_meanwhile {
            refused(location, "another workload is working on");
            refused_meanwhile = true;
        }
        progress.0 == 3 || (progress.0 < 3 && done(progress) >= 200)
    });
    assert!(refused_meanwhile && left.0 <= 3);
    refused(location, "finish it with --resume");
    for _ in 1..kills {
        let (resume, before) = (workload(location, "--quiet --resume"), done(&left));
        left = watch.kill_when(resume, |progress| progress.0 == 6);
        assert!(done(&left) > before);
    }

    let run = watch
        .recorder
        .read()
        .ok()
        .flatten()
        .expect("the record")
        .run_id;
    let history = |i| {
        watch
            .store
            .events_for_workflow(workflow_id(run, i), None, 10_000)
    };
    let events: usize = (0..600).map(|i| history(i).expect("events").len()).sum();
    let dir = tempfile::tempdir().expect("a directory");
    let json = dir.path().join("report.json");
    let mut resume = workload(
        location,
        &format!("--quiet --resume --json {}", json.display()),
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    while resume.try_wait().expect("poll").is_none() {
        assert!(Instant::now() < deadline, "the resumed run did not end");
        sleep(Duration::from_millis(50));
    }
    let output = resume.wait_with_output().expect("the workload's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json).expect("read")).expect("json");
    let checks = report["checks"].as_array().map(Vec::len);
    assert!(report["passed"] == true && checks == Some(7), "{stdout}");
    let found = &report["resumed"];
    let get = |field: &str| found[field].as_u64().expect(field);
    let (created, (batches, counts)) = (get("workflows_stored") + get("workflows_pruned"), left);
    assert_eq!(created + get("workflows_to_create"), 600, "{found}");
    assert!(
        (batches * 100..=batches * 100 + 100).contains(&created),
        "{found}"
    );
    let (claimed, events) = (counts.running as u64, events as u64);
    assert_eq!(
        (get("tasks_claimed"), get("events")),
        (claimed, events),
        "{found}"
    );
    let finished = (counts.completed + counts.failed) as u64;
    assert!(get("tasks_finished") <= finished, "{found}");
    let tasks_run = 6_000 - get("tasks_finished") - 10 * get("workflows_pruned");
    assert_eq!(report["tasks_run"], tasks_run, "{found}");
    report
}

#[test]
fn a_sqlite_run_killed_twice_is_finished_by_a_third_process() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("crash.db");
    let url = format!("sqlite://{}", path.display());
    let report = killed_and_resumed(&["--database-url", &url], 2);
    assert_eq!(report["resumed"]["workflows_to_create"], 0);

    #[derive(QueryableByName)]
    struct Integrity {
        #[diesel(sql_type = Text)]
        integrity_check: String,
    }
    let Ok(Conn::Sqlite(mut conn)) = Db::Sqlite(path).connect() else {
        panic!("the file")
    };
    let integrity = diesel::sql_query("PRAGMA integrity_check").load::<Integrity>(&mut conn);
    let lines: Vec<String> = integrity
        .expect("check")
        .into_iter()
        .map(|r| r.integrity_check)
        .collect();
    assert_eq!(lines, ["ok"]);
}

#[test]
fn a_postgres_run_killed_mid_run_is_finished_by_a_new_process() {
    use dal_tests::provision::postgres::{TempSchema, server_url};
    // The run's pool (runners + 2), its lock, record and footprint sessions, a refused second
    // workload's, and the test's own.
    let schema = TempSchema::with_connections(12);
    let report = killed_and_resumed(
        &["--database-url", server_url(), "--schema", schema.name()],
        1,
    );
    assert!(report["resumed"]["workflows_to_create"].as_u64() > Some(0));
}
