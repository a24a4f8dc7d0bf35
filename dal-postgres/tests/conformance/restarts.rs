//! Server restarts (PostgreSQL): the server is restarted, with `pg_ctl restart -m fast` and
//! `-m immediate`, while runners claim and complete tasks. Every call either did all it says or
//! failed with `Connection`; no task is half-written (each history replays to its row); the
//! pool recovers by itself and later calls succeed.
//!
//! The case starts a private cluster of its own (see `provision::cluster`): restarting the
//! server the rest of the suite shares would fail the cases running beside it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use dal_core::{DalError, Lease, NewTaskExecution, TaskExecutionStore, TaskStatus};
use uuid::Uuid;

use dal_tests::cases::support::{eventually, workflow};
use dal_tests::model::replay;
use dal_tests::provision::cluster::{self, Cluster};

/// The cases of this module, as `postgres::restarts::<name>`.
pub const CASES: &[(&str, fn())] = &[(
    "calls_across_server_restarts_are_all_or_nothing_and_the_pool_recovers",
    calls_across_server_restarts_are_all_or_nothing_and_the_pool_recovers,
)];

const RUNNERS: usize = 4;
const TASKS: usize = 20_000;
const BATCH: u32 = 8;
/// `fast` and `immediate`, alternately.
const RESTARTS: usize = 6;
/// Successful calls the runners make between restarts, and after the last one.
const CALLS_BETWEEN: usize = 40;
/// How long the runners may take to make them: a pool that did not recover fails the case.
const RECOVERY: Duration = Duration::from_secs(60);

/// The cluster, removed when the case ends, also when it fails.
struct Own(Cluster);

impl Drop for Own {
    fn drop(&mut self) {
        self.0.remove();
    }
}

/// What the runners saw.
#[derive(Default)]
struct Tally {
    calls: AtomicUsize,
    connection_errors: AtomicUsize,
}

fn calls_across_server_restarts_are_all_or_nothing_and_the_pool_recovers() {
    let cluster = Own(cluster::start().expect("a private cluster (needs initdb and pg_ctl)"));
    let pool_size = 4;
    let store: Arc<dyn TaskExecutionStore> = Arc::new(
        dal_postgres::PgOptions::new(cluster.0.url())
            .pool_size(pool_size)
            .connect_timeout(Duration::from_secs(30))
            .connect()
            .expect("connect to the private cluster"),
    );
    let wf = workflow();
    for chunk in (0..TASKS).collect::<Vec<_>>().chunks(1_000) {
        let news: Vec<NewTaskExecution> = chunk
            .iter()
            .map(|i| NewTaskExecution::new(wf, format!("t{i:05}")).with_status(TaskStatus::Ready))
            .collect();
        store.create_many(&news).expect("create the tasks");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let (progress, made) = mpsc::channel::<()>();
    let runners: Vec<_> = (0..RUNNERS)
        .map(|_| {
            let (store, stop, tally, progress) = (
                Arc::clone(&store),
                Arc::clone(&stop),
                Arc::clone(&tally),
                progress.clone(),
            );
            thread::spawn(move || run(&*store, &stop, &tally, &progress))
        })
        .collect();
    drop(progress);

    let await_calls = |what: &str| {
        for _ in 0..CALLS_BETWEEN {
            made.recv_timeout(RECOVERY)
                .unwrap_or_else(|e| panic!("no successful call {what} within {RECOVERY:?}: {e}"));
        }
    };
    for restart in 0..RESTARTS {
        await_calls("before a restart");
        let mode = if restart % 2 == 0 {
            "fast"
        } else {
            "immediate"
        };
        cluster
            .0
            .pg_ctl(&["restart", "-m", mode, "-w", "-t", "60"])
            .unwrap_or_else(|e| panic!("restart -m {mode}: {e}"));
    }
    await_calls("after the last restart");
    stop.store(true, Ordering::Relaxed);
    let unexpected: Vec<String> = runners
        .into_iter()
        .flat_map(|r| r.join().expect("a runner panicked"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "calls failed otherwise than with Connection: {unexpected:?}"
    );

    // Nothing half-written: every task's history replays to its row.
    let rows = eventually(|| store.list_for_workflow(wf));
    assert_eq!(rows.len(), TASKS);
    let mut events: HashMap<Uuid, Vec<dal_core::ExecutionEvent>> = HashMap::new();
    let mut after = None;
    loop {
        let page = eventually(|| store.events_for_workflow(wf, after, 10_000));
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        for event in page {
            events
                .entry(event.task_execution_id)
                .or_default()
                .push(event);
        }
    }
    for row in &rows {
        let history = events.get(&row.id).map_or(&[][..], Vec::as_slice);
        replay(row, history).unwrap_or_else(|e| panic!("task {}: {e}", row.id));
    }
    let calls = tally.calls.load(Ordering::Relaxed);
    let failed = tally.connection_errors.load(Ordering::Relaxed);
    let completed = rows
        .iter()
        .filter(|r| r.status == TaskStatus::Completed)
        .count();
    eprintln!(
        "restarts of {}: {RESTARTS} ({} fast, {} immediate), calls {calls}, failed with \
         Connection {failed}, unexpected errors 0, half-written 0, tasks completed {completed} \
         of {TASKS}",
        cluster.0.bindir().display(),
        RESTARTS.div_ceil(2),
        RESTARTS / 2
    );
}

/// A runner: claims a batch and completes it, over and over, until `stop`. Returns the calls
/// that failed otherwise than with `Connection`; checks that a `complete_many` that failed
/// wrote all of its batch or none of it.
fn run(
    store: &dyn TaskExecutionStore,
    stop: &AtomicBool,
    tally: &Tally,
    progress: &mpsc::Sender<()>,
) -> Vec<String> {
    let runner = Uuid::now_v7();
    let mut unexpected = Vec::new();
    // Counts a call; a failure other than `Connection` is kept for the case to report.
    let record = |result: Result<(), DalError>, what: &str, unexpected: &mut Vec<String>| {
        tally.calls.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => drop(progress.send(())),
            Err(DalError::Connection { .. }) => {
                tally.connection_errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(other) => unexpected.push(format!("{what}: {other:?}")),
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let claimed = match store.claim_ready(runner, BATCH) {
            Ok(claimed) => {
                record(Ok(()), "claim_ready", &mut unexpected);
                claimed
            }
            Err(err) => {
                record(Err(err), "claim_ready", &mut unexpected);
                continue;
            }
        };
        let leases: Vec<Lease> = claimed.iter().map(|c| c.lease).collect();
        if leases.is_empty() {
            continue;
        }
        match store.complete_many(&leases) {
            Ok(completion) => {
                if completion.completed.len() != leases.len() || !completion.lost.is_empty() {
                    unexpected.push(format!(
                        "complete_many: {} of {} completed, {} lost",
                        completion.completed.len(),
                        leases.len(),
                        completion.lost.len()
                    ));
                }
                record(Ok(()), "complete_many", &mut unexpected);
            }
            Err(err) => {
                record(Err(err), "complete_many", &mut unexpected);
                // All or nothing: the batch is all Completed (the commit landed before the
                // connection broke) or all still Running under this claim.
                let statuses: Vec<TaskStatus> = leases
                    .iter()
                    .map(|l| eventually(|| store.get(l.task_id)).status)
                    .collect();
                let all = |s| statuses.iter().all(|&x| x == s);
                if !(all(TaskStatus::Completed) || all(TaskStatus::Running)) {
                    unexpected.push(format!("complete_many half-written: {statuses:?}"));
                }
            }
        }
    }
    unexpected
}
