//! The workload process killed (`SIGKILL`) mid-run, then finished by `--resume`: on a SQLite
//! file (the resume killed too, a third process finishing) and on PostgreSQL. The finishing
//! run's checks pass over the whole run, what it says it found is what the database held after
//! the kill, and SQLite's `integrity_check` is ok. A second workload on a database in use is
//! refused at once, and so is a new run on a database that holds one.
#![allow(clippy::expect_used, clippy::panic)] // a failed setup is a failed test

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use dal_benches::workload::args::Args;
use dal_benches::workload::record::Recorder;
use dal_benches::workload::target::{Conn, Db, Target};
use dal_core::{History, StatusCounts, TaskExecutionStore};
use diesel::{QueryableByName, RunQueryDsl, sql_types::BigInt};
use serde_json::Value;

const BATCHES: u64 = 6;

/// The run: 6 creation batches of 1,000 tasks a second apart, runners slower than creation (3 ms
/// per task, about 600 tasks/s for the two) so that each kill finds work left; stale claims
/// recovered after 200 ms; retention on.
const RUN: &str = "--quiet --workflows 600 --runners 2 --work-us 3000 --create-pause-ms 1000 \
                   --stale-after-ms 200 --sweep-every-ms 20 --prune-every-ms 100 --retain-ms 300 \
                   --fail-rate 0.1 --crash-rate 0.1 --seed 7";

fn workload(location: &[&str], more: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_workload"));
    command
        .args(location)
        .args(more.split_whitespace())
        .stdin(Stdio::null());
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Runs a workload that must be refused at once, `because`.
fn refused(location: &[&str], because: &str) {
    let started = Instant::now();
    let output = workload(location, "--quiet")
        .output()
        .expect("run the workload");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(because), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The run's database, watched from outside.
struct Watch {
    target: Target,
    recorder: Option<Recorder>,
    store: Option<Box<dyn TaskExecutionStore>>,
}

impl Watch {
    fn new(location: &[&str]) -> Watch {
        let args = Args::parse_from(["workload"].iter().chain(location));
        Watch {
            target: Target::open(&args).expect("the database"),
            recorder: None,
            store: None,
        }
    }

    /// Creation batches made and the tasks by status, once the run has recorded itself.
    fn progress(&mut self) -> Option<(u64, StatusCounts)> {
        if self.recorder.is_none() {
            self.recorder = Recorder::connect(&self.target.db).ok();
        }
        let batches = self.recorder.as_mut()?.read().ok()??.created_batches;
        let store = self.store.get_or_insert_with(|| {
            self.target
                .connect(1, History::Kept, None)
                .expect("a store")
        });
        Some((batches, store.count_by_status().expect("count the tasks")))
    }

    /// Kills `child` once `ready` holds of the run's progress, and returns the progress then.
    fn kill_when(
        &mut self,
        child: &mut Child,
        mut ready: impl FnMut(u64, u64) -> bool,
    ) -> (u64, StatusCounts) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !self
            .progress()
            .is_some_and(|(batches, counts)| ready(batches, done(batches, &counts)))
        {
            assert!(
                child.try_wait().expect("poll").is_none(),
                "the workload ended before the kill"
            );
            assert!(Instant::now() < deadline, "the run made no progress");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().expect("kill -9 the workload");
        child.wait().expect("reap the workload");
        if let (Db::Postgres(_, schema, _), Ok(Conn::Pg(mut conn))) =
            (&self.target.db, self.target.db.connect())
        {
            // A statement running when its client died still commits: wait for those to end.
            let active = "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1 \
                          AND state <> 'idle'";
            let busy = diesel::sql_query(active).bind::<diesel::sql_types::Text, _>(schema);
            while busy
                .clone()
                .get_result::<Count>(&mut conn)
                .expect("read pg_stat_activity")
                .n
                > 0
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.progress().expect("the run's progress after the kill")
    }

    fn events(&self) -> u64 {
        let sql = format!(
            "SELECT count(*) AS n FROM {}",
            self.target.db.table("execution_events")
        );
        let count = match self.target.db.connect().expect("connect") {
            Conn::Sqlite(mut c) => diesel::sql_query(sql).get_result::<Count>(&mut c),
            Conn::Pg(mut c) => diesel::sql_query(sql).get_result::<Count>(&mut c),
        };
        count.expect("count the events").n as u64
    }

    /// Runs `--resume` to the end; checks that it passed and found what `left` says.
    fn resume_to_the_end(&self, location: &[&str], left: (u64, StatusCounts)) -> Value {
        let (dir, events) = (tempfile::tempdir().expect("a directory"), self.events());
        let json = dir.path().join("report.json");
        let mut child = workload(location, "--quiet --resume --json")
            .arg(&json)
            .spawn()
            .expect("resume");
        let deadline = Instant::now() + Duration::from_secs(300);
        while child.try_wait().expect("poll the workload").is_none() {
            assert!(
                Instant::now() < deadline,
                "the resumed run did not end in 5 minutes"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().expect("the workload's output");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value =
            serde_json::from_slice(&std::fs::read(&json).expect("read")).expect("json");
        assert_eq!(
            (
                report["passed"].as_bool(),
                report["checks"].as_array().map(Vec::len)
            ),
            (Some(true), Some(7))
        );
        let found = &report["resumed"];
        let get = |field: &str| found[field].as_u64().expect(field);
        let (created, (batches, counts)) =
            (get("workflows_stored") + get("workflows_pruned"), left);
        assert_eq!(created + get("workflows_to_create"), 600, "{found}");
        assert!(
            batches * 100 <= created && created <= (batches + 1) * 100,
            "{found}"
        );
        assert_eq!(
            (get("tasks_claimed"), get("events")),
            (counts.running as u64, events),
            "{found}"
        );
        assert!(
            get("tasks_finished") <= (counts.completed + counts.failed) as u64,
            "{found}"
        );
        let tasks_run = 6_000 - get("tasks_finished") - 10 * get("workflows_pruned");
        assert_eq!(report["tasks_run"], tasks_run, "{found}");
        report
    }
}

/// Tasks created that finished or were removed.
fn done(batches: u64, counts: &StatusCounts) -> u64 {
    let unfinished = (counts.not_started + counts.ready + counts.running) as u64;
    (batches * 1_000).saturating_sub(unfinished)
}

/// Whether to kill the first process: while half its batches are still to be made, once it
/// has finished some work or, on a slow machine, when half the batches exist.
fn mid_creation(batches: u64, done: u64) -> bool {
    batches == BATCHES / 2 || (batches < BATCHES / 2 && done >= 200)
}

#[test]
fn a_sqlite_run_killed_twice_is_finished_by_a_third_process() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("crash.db").display());
    let location = ["--database-url", &url];
    let mut watch = Watch::new(&location);

    let mut first = workload(&location, RUN)
        .spawn()
        .expect("start the workload");
    let mut refused_meanwhile = false;
    let (batches, _) = watch.kill_when(&mut first, |batches, done| {
        if batches >= 1 && !refused_meanwhile {
            refused(&location, "another workload is working on");
            refused_meanwhile = true;
        }
        mid_creation(batches, done)
    });
    assert!(refused_meanwhile && batches <= BATCHES / 2);
    refused(&location, "finish it with --resume");

    // Resumed, and killed again once it has made every batch.
    let mut second = workload(&location, "--quiet --resume")
        .spawn()
        .expect("resume");
    let left = watch.kill_when(&mut second, |batches, _| batches == BATCHES);
    assert!(done(left.0, &left.1) > 0);
    let report = watch.resume_to_the_end(&location, left);
    assert_eq!(report["resumed"]["workflows_to_create"], 0);

    let Ok(Conn::Sqlite(mut conn)) = watch.target.db.connect() else {
        panic!("the file")
    };
    #[derive(QueryableByName)]
    struct Integrity {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    let integrity: Vec<Integrity> = diesel::sql_query("PRAGMA integrity_check")
        .load(&mut conn)
        .expect("check");
    assert_eq!(
        integrity
            .iter()
            .map(|r| r.integrity_check.as_str())
            .collect::<Vec<_>>(),
        ["ok"]
    );
}

#[test]
fn a_postgres_run_killed_mid_run_is_finished_by_a_new_process() {
    use dal_tests::provision::postgres::{TempSchema, server_url};
    // The run's pool (runners + 2), its lock, record and footprint sessions, a refused second
    // workload's, and the test's own.
    let schema = TempSchema::with_connections(12);
    let location = ["--database-url", server_url(), "--schema", schema.name()];
    let mut watch = Watch::new(&location);

    let mut first = workload(&location, RUN)
        .spawn()
        .expect("start the workload");
    let left = watch.kill_when(&mut first, mid_creation);
    refused(&location, "finish it with --resume");
    let report = watch.resume_to_the_end(&location, left);
    assert!(report["resumed"]["workflows_to_create"].as_u64() > Some(0));
}
