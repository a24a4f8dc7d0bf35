//! The workload process killed (`SIGKILL`) mid-run, then a new process finishing the run with
//! `--resume`: on a SQLite file (killed twice, the second time while resuming) and on
//! PostgreSQL. Afterwards every check of the whole run passes (every task terminal, every
//! history replays to its row, one event per change, no overlapping claims), the report of
//! the resumed run agrees with what the database held after the kill, and SQLite's
//! `integrity_check` is ok. Also: a second workload on a database in use is refused at once, and
//! so is a new run on a database that holds one.
#![allow(clippy::expect_used, clippy::panic)] // test helpers: a failed setup is a failed test

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dal_benches::workload::record::Recorder;
use dal_benches::workload::target::Database;
use dal_core::{StatusCounts, TaskExecutionStore};
use diesel::sql_types::BigInt;
use diesel::{Connection, QueryableByName, RunQueryDsl, SqliteConnection};
use serde_json::Value;

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");
const WORKFLOWS: u64 = 600;
const TASKS: u64 = WORKFLOWS * 10;
const BATCHES: u64 = WORKFLOWS / 100;

/// The run: 6 creation batches a second apart, runners slower than creation (3 ms per task,
/// about 600 tasks/s for the two), so that each kill lands with work left whatever the
/// machine's load; stale claims recovered after 200 ms; retention on.
const RUN: [&str; 22] = [
    "--quiet",
    "--workflows",
    "600",
    "--runners",
    "2",
    "--work-us",
    "3000",
    "--create-pause-ms",
    "1000",
    "--stale-after-ms",
    "200",
    "--sweep-every-ms",
    "20",
    "--prune-every-ms",
    "100",
    "--retain-ms",
    "300",
    "--fail-rate",
    "0.1",
    "--crash-rate",
    "0.1",
    "--seed=7",
];

fn workload(location: &[&str], more: &[&str]) -> Command {
    let mut command = Command::new(WORKLOAD);
    command
        .args(location)
        .args(more)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn refused(output: &Output, because: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains(because), "stderr: {stderr}");
}

/// Where the run stands, as the database says.
struct Progress {
    created_batches: u64,
    counts: StatusCounts,
}

impl Progress {
    /// Tasks created that are finished or were pruned.
    fn finished_or_pruned(&self) -> u64 {
        let unfinished = self.counts.not_started + self.counts.ready + self.counts.running;
        (self.created_batches * 1_000).saturating_sub(u64::try_from(unfinished).unwrap_or(0))
    }
}

/// Reads a run's progress through connections opened once and kept (the record's, then a store
/// on the run's database once the run has recorded itself).
struct Watch {
    database: Database,
    open: Box<dyn Fn() -> Box<dyn TaskExecutionStore>>,
    recorder: Option<Recorder>,
    store: Option<Box<dyn TaskExecutionStore>>,
    /// Waits, after a kill, until the dead process can change nothing more.
    settle: Box<dyn Fn()>,
}

impl Watch {
    fn new(database: Database, open: impl Fn() -> Box<dyn TaskExecutionStore> + 'static) -> Self {
        Watch {
            database,
            open: Box::new(open),
            recorder: None,
            store: None,
            settle: Box::new(|| {}),
        }
    }

    /// The run's progress: `None` while the run has not recorded itself yet.
    fn progress(&mut self) -> Option<Progress> {
        if self.recorder.is_none() {
            self.recorder = Recorder::connect(&self.database).ok();
        }
        let record = self.recorder.as_mut()?.read().ok()??;
        let store = self.store.get_or_insert_with(|| (self.open)());
        let counts = store.count_by_status().expect("count the tasks");
        Some(Progress {
            created_batches: record.created_batches,
            counts,
        })
    }

    /// Waits until `ready` holds of the run's progress, then kills `child` and returns the
    /// progress read after the kill; panics if the process ends first or nothing happens in 3
    /// minutes.
    fn kill_when(
        &mut self,
        child: &mut Child,
        mut ready: impl FnMut(&Progress) -> bool,
    ) -> Progress {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(status) = child.try_wait().expect("poll the workload") {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                panic!("the workload ended ({status}) before it was killed: {stderr}");
            }
            if self.progress().is_some_and(|p| ready(&p)) {
                break;
            }
            assert!(Instant::now() < deadline, "the run made no progress");
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().expect("kill -9 the workload");
        child.wait().expect("reap the workload");
        (self.settle)();
        self.progress().expect("the run's progress after the kill")
    }
}

/// Whether to kill the first process: while at least half its batches are still to be made,
/// once it has finished some work or, on a slow machine, when half the batches exist.
fn mid_creation(p: &Progress) -> bool {
    p.created_batches == BATCHES / 2
        || (p.created_batches < BATCHES / 2 && p.finished_or_pruned() >= 200)
}

/// Runs `--resume` to the end and returns its JSON report, after checking that it passed.
fn resume_to_the_end(location: &[&str], dir: &Path) -> Value {
    let json = dir.join("report.json");
    let mut child = workload(location, &["--quiet", "--resume", "--json"])
        .arg(&json)
        .spawn()
        .expect("resume the workload");
    // A resumed run that cannot finish (work it does not know of) would wait forever.
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().expect("poll the workload").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the resumed run did not end in 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("the workload's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "resume failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read the report"))
            .expect("parse the report");
    assert_eq!(report["passed"], true, "{stdout}");
    let checks = report["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 7);
    for check in checks {
        assert_eq!(check["passed"], true, "{check}");
    }
    assert_eq!(report["tasks"], TASKS);
    eprintln!("resumed: {}", report["resumed"]);
    report
}

/// What the resumed run's report says it found, against what the database held after the kill.
fn found_what_was_left(report: &Value, left: &Progress, events: i64) {
    let resumed = &report["resumed"];
    let get = |field: &str| resumed[field].as_u64().expect(field);
    assert_eq!(
        get("workflows_stored") + get("workflows_pruned") + get("workflows_to_create"),
        WORKFLOWS,
        "{resumed}"
    );
    let created = get("workflows_stored") + get("workflows_pruned");
    assert!(created >= left.created_batches * 100, "{resumed}");
    assert!(created <= (left.created_batches + 1) * 100, "{resumed}");
    assert_eq!(
        get("tasks_claimed"),
        u64::try_from(left.counts.running).expect("count"),
        "{resumed}"
    );
    assert_eq!(
        get("events"),
        u64::try_from(events).expect("count"),
        "{resumed}"
    );
    assert!(
        get("tasks_finished")
            <= u64::try_from(left.counts.completed + left.counts.failed).expect("count"),
        "{resumed}"
    );
    let tasks_run = report["tasks_run"].as_u64().expect("tasks_run");
    assert_eq!(
        tasks_run,
        TASKS - get("tasks_finished") - 10 * get("workflows_pruned"),
        "{report}"
    );
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The events the database holds.
fn count_events<C>(conn: &mut C) -> i64
where
    C: Connection,
    for<'a> diesel::query_builder::SqlQuery: diesel::query_dsl::LoadQuery<'a, C, Count>,
{
    diesel::sql_query("SELECT count(*) AS n FROM execution_events")
        .get_result::<Count>(conn)
        .expect("count the events")
        .n
}

#[test]
fn a_sqlite_run_killed_twice_is_finished_by_a_third_process() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("crash.db");
    let url = format!("sqlite://{}", path.display());
    let location = ["--database-url", url.as_str()];
    let file = path.display().to_string();
    let mut watch = Watch::new(Database::Sqlite(path.clone()), move || {
        Box::new(
            dal_sqlite::SqliteOptions::new(file.clone())
                .pool_size(1)
                .open()
                .expect("open the file"),
        )
    });
    let events = || {
        count_events(&mut SqliteConnection::establish(&path.display().to_string()).expect("open"))
    };

    // Killed while half the batches are still to be created.
    let mut first = workload(&location, &RUN)
        .spawn()
        .expect("start the workload");
    let mut seen_running = false;
    let left = watch.kill_when(&mut first, |p| {
        if p.created_batches >= 1 && !seen_running {
            // Meanwhile, a second workload on the same file is refused at once.
            let started = Instant::now();
            let output = workload(&location, &["--quiet"]).output().expect("run");
            refused(&output, "another workload is working on");
            assert!(started.elapsed() < Duration::from_secs(10));
        }
        seen_running = p.created_batches >= 1;
        mid_creation(p)
    });
    assert!(left.created_batches <= BATCHES / 2);
    assert!(seen_running);
    // A new run is refused: the file holds one.
    refused(
        &workload(&location, &["--quiet"]).output().expect("run"),
        "finish it with --resume",
    );

    // Resumed, and killed again once it has made every batch (a second or more apart, so it
    // has been working for a few seconds).
    let mut second = workload(&location, &["--quiet", "--resume"])
        .spawn()
        .expect("resume the workload");
    let before = left.finished_or_pruned();
    let left = watch.kill_when(&mut second, |p| p.created_batches == BATCHES);
    assert_eq!(left.created_batches, BATCHES);
    assert!(left.finished_or_pruned() > before);

    // Resumed again, to the end.
    let events_left = events();
    let report = resume_to_the_end(&location, dir.path());
    found_what_was_left(&report, &left, events_left);
    assert_eq!(report["resumed"]["workflows_to_create"], 0);

    let mut conn = SqliteConnection::establish(&path.display().to_string()).expect("open");
    #[derive(QueryableByName)]
    struct Integrity {
        #[diesel(sql_type = diesel::sql_types::Text)]
        integrity_check: String,
    }
    let integrity: Vec<Integrity> = diesel::sql_query("PRAGMA integrity_check")
        .load(&mut conn)
        .expect("integrity_check");
    let lines: Vec<&str> = integrity
        .iter()
        .map(|r| r.integrity_check.as_str())
        .collect();
    assert_eq!(lines, vec!["ok"]);
}

/// Drops the schema the test's runs worked in.
struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        if let Ok(mut conn) = diesel::PgConnection::establish(&self.url) {
            let _ = diesel::sql_query(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema))
                .execute(&mut conn);
        }
    }
}

#[test]
fn a_postgres_run_killed_mid_run_is_finished_by_a_new_process() {
    use dal_tests::provision::postgres;
    // The run's pools (runners + 2 each, one at a time), its lock, record and footprint
    // sessions, a refused second workload's two and the test's own two.
    let _permit = postgres::reserve_connections(12);
    let url = postgres::server_url().to_owned();
    let schema = format!("dal_crash_{}", std::process::id());
    let _cleanup = DropSchema {
        url: url.clone(),
        schema: schema.clone(),
    };
    let location = ["--database-url", url.as_str(), "--schema", schema.as_str()];
    let database = Database::Postgres {
        url: url.clone(),
        schema: schema.clone(),
        pooled: false,
    };
    let in_schema = database.url();
    let store_url = in_schema.clone();
    let mut watch = Watch::new(database, move || {
        Box::new(
            dal_postgres::PgOptions::new(store_url.clone())
                .pool_size(1)
                .connect()
                .expect("connect"),
        )
    });
    let events =
        || count_events(&mut diesel::PgConnection::establish(&in_schema).expect("connect"));
    // A statement the server was running when its client died still commits: wait until none of
    // the dead process's sessions (named after the schema) is active.
    let (server, name) = (url.clone(), schema.clone());
    watch.settle = Box::new(move || {
        let mut conn = diesel::PgConnection::establish(&server).expect("connect");
        let deadline = Instant::now() + Duration::from_secs(60);
        while diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1 \
             AND state <> 'idle'",
        )
        .bind::<diesel::sql_types::Text, _>(&name)
        .get_result::<Count>(&mut conn)
        .expect("read pg_stat_activity")
        .n > 0
        {
            assert!(
                Instant::now() < deadline,
                "the dead process's statements never ended"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    });

    let mut first = workload(&location, &RUN)
        .spawn()
        .expect("start the workload");
    let left = watch.kill_when(&mut first, mid_creation);
    refused(
        &workload(&location, &["--quiet"]).output().expect("run"),
        "finish it with --resume",
    );
    let events_left = events();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let report = resume_to_the_end(&location, dir.path());
    found_what_was_left(&report, &left, events_left);
    assert!(report["resumed"]["workflows_to_create"].as_u64() > Some(0));
}
