//! The workload's checks pass on a run whose pruner removes finished work as it goes, and
//! still fail when the database or the record of the run disagree (on SQLite, no server needed).
#![allow(clippy::expect_used, clippy::panic)] // test helpers: a failed setup is a failed test

use chrono::{TimeDelta, Utc};
use clap::Parser;
use dal_benches::workload::args::Args;
use dal_benches::workload::checks::{Check, run_checks};
use dal_benches::workload::ledger::Ledger;
use dal_benches::workload::metrics::Outcomes;
use dal_benches::workload::plan::Plan;
use dal_benches::workload::run::{self, Finished};
use dal_benches::workload::target::{Database, Target};
use dal_core::{NewTaskExecution, Pruned, TaskExecutionStore, TaskStatus};
use dal_tests::counter::StatementCounter;
use diesel::sql_types::Binary;
use diesel::{Connection, RunQueryDsl, SqliteConnection};
use uuid::Uuid;

const TERMINAL: &str = "every task reached a terminal status";
const EVENTS: &str = "every change left exactly one event";
const REPLAY: &str = "every history replays to its task's row";

fn args(retention: &[&str]) -> Args {
    let mut argv = vec!["workload", "--quiet", "--workflows", "40", "--runners", "2"];
    argv.extend_from_slice(retention);
    Args::parse_from(argv)
}

fn store(target: &Target) -> std::sync::Arc<dyn TaskExecutionStore> {
    target.connect(&StatementCounter::new()).expect("connect")
}

/// A run on a fresh SQLite file.
fn run_on_sqlite(args: &Args) -> (Target, Finished) {
    let target = Target::open(args).expect("create the database");
    let plan = Plan::fresh(Uuid::now_v7(), args.workflows);
    let finished = run::run(store(&target), args, &plan, None);
    assert_eq!(finished.error, None);
    (target, finished)
}

fn failing(target: &Target, ledger: &Ledger, outcomes: &Outcomes) -> Vec<&'static str> {
    let checks: Vec<Check> =
        run_checks(&*store(target), ledger, outcomes).expect("read the results back");
    assert_eq!(checks.len(), 7);
    checks
        .into_iter()
        .filter(|c| !c.passed)
        .map(|c| c.name)
        .collect()
}

fn sql(target: &Target, statement: &str, workflow: Uuid) {
    let Database::Sqlite(path) = &target.database else {
        panic!("a SQLite target")
    };
    let mut conn = SqliteConnection::establish(&path.display().to_string()).expect("open");
    diesel::sql_query(statement)
        .bind::<Binary, _>(workflow.as_bytes().to_vec())
        .execute(&mut conn)
        .expect("tamper");
}

/// After a run without a pruner, prunes one batch of `limit` finished tasks, recorded as the
/// pruner would; returns a workflow execution still stored.
fn prune_some(target: &Target, finished: &Finished, limit: u32) -> Uuid {
    let older_than = Utc::now() + TimeDelta::seconds(1);
    let pruned = store(target)
        .prune_finished(older_than, limit, None)
        .expect("prune");
    assert!(!pruned.workflows.is_empty());
    finished.ledger.pruned(&pruned);
    let ledger = &finished.ledger;
    *ledger
        .workflows()
        .iter()
        .find(|w| ledger.counted(**w).is_some_and(|c| c.pruned == 0))
        .expect("a workflow execution left")
}

#[test]
fn a_run_whose_pruner_removes_finished_work_passes_every_check() {
    let (target, finished) = run_on_sqlite(&args(&["--prune-every-ms", "20", "--retain-ms", "0"]));
    assert!(finished.outcomes.snapshot()["pruned_workflows"] > 0);
    assert_eq!(
        failing(&target, &finished.ledger, &finished.outcomes),
        Vec::<&str>::new()
    );
}

#[test]
fn a_lost_event_fails_the_event_count_and_the_replay() {
    let (target, finished) = run_on_sqlite(&args(&["--prune-every-ms", "0"]));
    let stored = prune_some(&target, &finished, 50);
    assert_eq!(
        failing(&target, &finished.ledger, &finished.outcomes),
        Vec::<&str>::new()
    );
    sql(
        &target,
        "DELETE FROM execution_events WHERE seq = \
         (SELECT max(seq) FROM execution_events WHERE workflow_execution_id = ?)",
        stored,
    );
    assert_eq!(
        failing(&target, &finished.ledger, &finished.outcomes),
        vec![REPLAY, EVENTS]
    );
}

#[test]
fn a_workflow_removed_without_a_report_fails() {
    let (target, finished) = run_on_sqlite(&args(&["--prune-every-ms", "0"]));
    let stored = prune_some(&target, &finished, 50);
    sql(
        &target,
        "DELETE FROM task_executions WHERE workflow_execution_id = ?",
        stored,
    );
    assert!(failing(&target, &finished.ledger, &finished.outcomes).contains(&TERMINAL));
}

#[test]
fn a_workflow_reported_removed_but_still_stored_fails() {
    let (target, finished) = run_on_sqlite(&args(&["--prune-every-ms", "0"]));
    let stored = prune_some(&target, &finished, 50);
    let counted = finished.ledger.counted(stored).unwrap_or_default();
    finished.ledger.pruned(&Pruned {
        workflows: vec![stored],
        tasks: 10,
        events: counted.events,
        next: None,
    });
    assert_eq!(
        failing(&target, &finished.ledger, &finished.outcomes),
        vec![TERMINAL]
    );
}

#[test]
fn retention_of_unfinished_work_fails() {
    // A workflow execution created and never worked on, removed as if retention had taken it.
    let args = args(&[]);
    let target = Target::open(&args).expect("create the database");
    let workflow = Uuid::now_v7();
    let news: Vec<NewTaskExecution> = (0..10)
        .map(|i| {
            NewTaskExecution::new(workflow, format!("task-{i}")).with_status(TaskStatus::Ready)
        })
        .collect();
    store(&target).create_many(&news).expect("create");
    let ledger = Ledger::new(vec![workflow], 10);
    for _ in 0..10 {
        ledger.changed(workflow);
    }
    sql(
        &target,
        "DELETE FROM task_executions WHERE workflow_execution_id = ?",
        workflow,
    );
    sql(
        &target,
        "DELETE FROM execution_events WHERE workflow_execution_id = ?",
        workflow,
    );
    ledger.pruned(&Pruned {
        workflows: vec![workflow],
        tasks: 10,
        events: 10,
        next: None,
    });
    assert_eq!(
        failing(&target, &ledger, &Outcomes::default()),
        vec![TERMINAL]
    );
}

#[test]
fn a_run_reports_when_creation_ended_and_the_claims_that_found_nothing() {
    // One task and four runners: whichever runner claims it, the others find the queue
    // empty (before the task is created or after it is claimed) and wait.
    let args = Args::parse_from([
        "workload",
        "--quiet",
        "--workflows",
        "1",
        "--tasks-per-workflow",
        "1",
        "--runners",
        "4",
        "--crashing-runners",
        "0",
        "--fail-rate",
        "0",
    ]);
    let (target, finished) = run_on_sqlite(&args);
    assert!(finished.creation > std::time::Duration::ZERO);
    assert!(finished.creation <= finished.elapsed);
    let outcomes = finished.outcomes.snapshot();
    assert_eq!(outcomes["claims"], 1);
    assert_eq!(outcomes["completed"], 1);
    assert!(outcomes["empty_claims"] > 0, "{outcomes:?}");
    assert_eq!(
        failing(&target, &finished.ledger, &finished.outcomes),
        Vec::<&str>::new()
    );
}
