//! `pg_ctl restart -m fast` and `-m immediate` while runners claim and complete, on a private
//! cluster: every call did all or failed with `Connection`, no task is half-written, the pool
//! recovers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::Duration;

use dal_core::{
    DalError, HistoryStore, Lease, NewTaskExecution, TaskExecutionStore, TaskStatus, TaskStore,
    WakeStore,
};
use uuid::Uuid;

use dal_tests::cases::support::{eventually, workflow};
use dal_tests::model::replay;
use dal_tests::provision::cluster;

const RUNNERS: usize = 4;
const TASKS: usize = 20_000;
const BATCH: u32 = 8;
const RESTARTS: usize = 6;
/// Successful calls the runners make between restarts, and after the last one.
const CALLS_BETWEEN: usize = 40;
/// How long the runners may take to make them: a pool that did not recover fails the case.
const RECOVERY: Duration = Duration::from_secs(60);

pub fn calls_across_server_restarts_are_all_or_nothing_and_the_pool_recovers() {
    // Removed when the case ends, also when it fails.
    let cluster = cluster::start().expect("a private cluster (needs initdb and pg_ctl)");
    let options = dal_postgres::PgOptions::new(cluster.url()).pool_size(4);
    let store = options.connect_timeout(Duration::from_secs(30)).connect().expect("connect");
    let wf = workflow();
    let ready = |i| NewTaskExecution::new(wf, format!("t{i:05}")).with_status(TaskStatus::Ready);
    let news: Vec<NewTaskExecution> = (0..TASKS).map(ready).collect();
    news.chunks(1_000).for_each(|chunk| drop(store.create_many(chunk).expect("create the tasks")));

    let stop = AtomicBool::new(false);
    let (made, calls_made) = mpsc::channel();
    let tallies: Vec<Tally> = thread::scope(|scope| {
        let (store, stop) = (&store, &stop);
        let tally = |made| Tally { made, calls: 0, connection_errors: 0, unexpected: vec![] };
        let spawn = |made| scope.spawn(move || run(store, stop, tally(made)));
        let runners: Vec<_> = (0..RUNNERS).map(|_| spawn(made.clone())).collect();
        drop(made);
        let await_calls = |when: &str| {
            for _ in 0..CALLS_BETWEEN {
                let made = calls_made.recv_timeout(RECOVERY);
                made.unwrap_or_else(|e| {
                    panic!("no successful call {when} within {RECOVERY:?}: {e}")
                });
            }
        };
        for mode in ["fast", "immediate"].into_iter().cycle().take(RESTARTS) {
            await_calls("before a restart");
            let restart = cluster.pg_ctl(&["restart", "-m", mode, "-w", "-t", "60"]);
            restart.unwrap_or_else(|e| panic!("restart -m {mode}: {e}"));
        }
        await_calls("after the last restart");
        stop.store(true, Ordering::Relaxed);
        runners.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let unexpected: Vec<&String> = tallies.iter().flat_map(|t| &t.unexpected).collect();
    assert!(unexpected.is_empty(), "calls failed otherwise: {unexpected:?}");

    // Nothing half-written: every task's history replays to its row.
    let rows = eventually(|| store.list_for_workflow(wf));
    assert_eq!(rows.len(), TASKS);
    let mut events: HashMap<Uuid, Vec<dal_core::ExecutionEvent>> = HashMap::new();
    let mut after = None;
    loop {
        let page = eventually(|| store.events_for_workflow(wf, after, 10_000));
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        page.into_iter().for_each(|e| events.entry(e.task_execution_id).or_default().push(e));
    }
    for row in &rows {
        let history = events.get(&row.id).map_or(&[][..], Vec::as_slice);
        replay(row, history).unwrap_or_else(|e| panic!("task {}: {e}", row.id));
    }
    let sum = |count: fn(&Tally) -> usize| tallies.iter().map(count).sum::<usize>();
    let completed = rows.iter().filter(|r| r.status == TaskStatus::Completed);
    eprintln!(
        "restarts of {}: {RESTARTS}, fast and immediate alternately; calls {}, failed with \
         Connection {}, tasks completed {} of {TASKS}",
        cluster.bindir().display(),
        sum(|t| t.calls),
        sum(|t| t.connection_errors),
        completed.count(),
    );
}

/// A runner waits while the server restarts and another store writes once it is back: the
/// listener connects again and the task is claimed (meanwhile waiters wake at the fallback).
pub fn a_waiting_runner_claims_what_is_written_after_a_server_restart() {
    let cluster = cluster::start().expect("a private cluster (needs initdb and pg_ctl)");
    let connect = || {
        let options = dal_postgres::PgOptions::new(cluster.url()).pool_size(2);
        options.connect_timeout(Duration::from_secs(30)).connect().expect("connect")
    };
    let (store, other) = (connect(), connect());
    crate::listening::settled(&store);
    let (claimed, took) = thread::scope(|scope| {
        let waiter = scope.spawn(|| crate::listening::claim_one(&store));
        while store.wakeups().waiting() == 0 {
            thread::yield_now();
        }
        cluster.pg_ctl(&["restart", "-m", "fast", "-w", "-t", "60"]).expect("restart");
        let written = std::time::Instant::now();
        eventually(|| other.create(&crate::listening::ready("after the restart")));
        let (claimed, _) = waiter.join().expect("the waiter");
        (claimed, written.elapsed())
    });
    assert_eq!(claimed, "after the restart");
    eprintln!("claimed {took:?} after the write that followed a restart");
}

/// A runner's calls, `Connection` failures, and calls not all-or-nothing; successes go to `made`.
struct Tally {
    made: Sender<()>,
    calls: usize,
    connection_errors: usize,
    unexpected: Vec<String>,
}

impl Tally {
    fn record<T>(&mut self, call: &str, result: Result<T, DalError>) -> Option<T> {
        self.calls += 1;
        match result {
            Ok(value) => {
                let _ = self.made.send(());
                return Some(value);
            }
            Err(DalError::Connection { .. }) => self.connection_errors += 1,
            Err(other) => self.unexpected.push(format!("{call}: {other:?}")),
        }
        None
    }
}

fn run(store: &dyn TaskExecutionStore, stop: &AtomicBool, mut tally: Tally) -> Tally {
    let runner = Uuid::now_v7();
    while !stop.load(Ordering::Relaxed) {
        let Some(claimed) = tally.record("claim_ready", store.claim_ready(runner, BATCH)) else {
            continue;
        };
        let leases: Vec<Lease> = claimed.iter().map(|c| c.lease).collect();
        if leases.is_empty() {
            continue;
        }
        if let Some(done) = tally.record("complete_many", store.complete_many(&leases)) {
            if done.completed.len() != leases.len() || !done.lost.is_empty() {
                tally.unexpected.push(format!("complete_many of {leases:?}: {done:?}"));
            }
            continue;
        }
        // Failed, all or nothing: the batch is all Completed (the commit landed before the
        // connection broke) or all still Running under this claim.
        let status = |lease: &Lease| eventually(|| store.get(lease.task_id)).status;
        let statuses: Vec<TaskStatus> = leases.iter().map(status).collect();
        let all = |s| statuses.iter().all(|&x| x == s);
        if !(all(TaskStatus::Completed) || all(TaskStatus::Running)) {
            tally.unexpected.push(format!("complete_many half-written: {statuses:?}"));
        }
    }
    tally
}
