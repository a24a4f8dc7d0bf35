//! The checks pass with a pruner at work, fail when the database and the ledger disagree;
//! `--resume` reads exactly what a dead process left and finishes it. On SQLite.
#![allow(clippy::expect_used, clippy::panic)] // a failed setup is a failed test

use chrono::{TimeDelta, Utc};
use clap::Parser;
use dal_benches::workload::checks::{CHECKS, run_checks};
use dal_benches::workload::ledger::{Ledger, resume, workflow_id};
use dal_benches::workload::{args::Args, db::Conn, db::Target, report::Metrics, run::run};
use dal_core::{Claimed, History, NewTaskExecution, Pruned, TaskExecutionStore, TaskStatus};
use diesel::{RunQueryDsl, sql_types::Binary};
use serde_json::json;
use uuid::Uuid;

const TERMINAL: &str = CHECKS[0];

/// A run's database, its ledger, and its metrics.
type Run = (Target, Ledger, Metrics);

fn args(more: &str) -> Args {
    Args::parse_from(["workload", "--quiet"].into_iter().chain(more.split_whitespace()))
}

fn store(target: &Target) -> Box<dyn TaskExecutionStore> {
    target.connect(4, History::Kept, &Default::default()).expect("open the store")
}

/// Runs `ledger`'s workflow executions on `target`.
fn run_on(target: Target, args: &Args, ledger: Ledger) -> Run {
    let (metrics, ..) = run(&*store(&target), &args.job, &ledger, None, true).expect("the run");
    (target, ledger, metrics)
}

/// A new run on a new SQLite file.
fn fresh(more: &str) -> Run {
    let (args, run) = (args(more), Uuid::now_v7());
    let ledger = Ledger::new(run, args.job.workflows, args.job.tasks_per_workflow);
    run_on(Target::open(&args).expect("create the database"), &args, ledger)
}

fn failing((target, ledger, metrics): &Run) -> Vec<&'static str> {
    let checks = run_checks(&*store(target), ledger, metrics).expect("read the results back");
    assert_eq!(checks.len(), 7);
    checks.into_iter().filter(|c| !c.passed).map(|c| c.name).collect()
}

/// What a `prune_finished` batch reports when it removes `workflow`, of 10 tasks.
fn removed(workflow: Uuid, events: u64) -> Pruned {
    Pruned { workflows: vec![workflow], tasks: 10, events, next: None }
}

fn sql(target: &Target, statement: &str, workflow: Uuid) {
    let Ok(Conn::Sqlite(mut conn)) = target.db.connect() else { panic!("a SQLite file") };
    let query = diesel::sql_query(statement).bind::<Binary, _>(workflow.as_bytes().to_vec());
    query.execute(&mut conn).expect("tamper with the database");
}

#[test]
fn a_run_whose_pruner_removes_finished_work_passes_every_check() {
    let run = fresh("--workflows 40 --prune-every-ms 20 --retain-ms 0");
    assert!(run.2.outcomes()["pruned_workflows"] > 0);
    assert!(failing(&run).is_empty());
}

/// The checks failing after `tamper` with a workflow execution still stored, of a run whose
/// other workflow executions were partly removed (the removal reported).
fn tampered(tamper: impl FnOnce(&Target, &Ledger, Uuid)) -> Vec<&'static str> {
    let run = fresh("--workflows 40 --prune-every-ms 0");
    let pruned = store(&run.0).prune_finished(Utc::now() + TimeDelta::seconds(1), 50, None);
    run.1.pruned(&pruned.expect("prune"));
    assert!(failing(&run).is_empty());
    let stored = |w: &Uuid| run.1.counted(*w).is_some_and(|c| c.pruned == 0);
    let workflow = run.1.workflows().find(stored).expect("one left");
    tamper(&run.0, &run.1, workflow);
    failing(&run)
}

#[test]
fn the_checks_fail_when_the_database_and_the_ledger_disagree() {
    let lost = "DELETE FROM execution_events WHERE seq = \
                (SELECT max(seq) FROM execution_events WHERE workflow_execution_id = ?)";
    let lost = tampered(|target, _, w| sql(target, lost, w));
    assert_eq!(lost, [CHECKS[4], CHECKS[5]]);
    let gone = "DELETE FROM task_executions WHERE workflow_execution_id = ?";
    assert!(tampered(|target, _, w| sql(target, gone, w)).contains(&TERMINAL));
    let reported = |_: &Target, ledger: &Ledger, workflow| {
        let events = ledger.counted(workflow).map_or(0, |c| c.events);
        ledger.pruned(&removed(workflow, events));
    };
    assert_eq!(tampered(reported), [TERMINAL]);
}

#[test]
fn retention_of_unfinished_work_fails() {
    // A workflow execution created and never worked on, removed as retention would.
    let target = Target::open(&args("")).expect("create the database");
    let ledger = Ledger::new(Uuid::now_v7(), 1, 10);
    let workflow = workflow_id(ledger.run, 0);
    let new = |i| NewTaskExecution::new(workflow, format!("t{i}"));
    let news: Vec<_> = (0..10).map(new).collect();
    store(&target).create_many(&news).expect("create");
    ledger.record([workflow; 10], None);
    for table in ["task_executions", "execution_events"] {
        let delete = format!("DELETE FROM {table} WHERE workflow_execution_id = ?");
        sql(&target, &delete, workflow);
    }
    ledger.pruned(&removed(workflow, 10));
    assert_eq!(failing(&(target, ledger, Metrics::default())), [TERMINAL]);
}

#[test]
fn a_resumed_run_reads_what_a_dead_process_left_and_finishes_it() {
    let args = args("--workflows 300 --tasks-per-workflow 2 --prune-every-ms 0");
    let target = Target::open(&args).expect("create the database");
    let (store, run_id, dead) = (store(&target), Uuid::now_v7(), Uuid::now_v7());
    let (mut ledger, wf) = (Ledger::new(run_id, 300, 2), |i| workflow_id(run_id, i));
    // Batches 0 and 1 created, the record saying 1 (the process died before recording the
    // second); batch 2 never created.
    let new = |i: usize| NewTaskExecution::new(wf(i / 2), format!("t{}", i % 2));
    let ready = |i| new(i).with_status(TaskStatus::Ready).with_max_attempts(3);
    let news: Vec<_> = (0..400).map(ready).collect();
    store.create_many(&news).expect("create");
    // Workflow executions 0 and 1 finished, then 0 removed; 2 claimed by the dead runner.
    for workflow in [wf(0), wf(1), wf(2)] {
        let claimed = store.claim_ready(dead, 2).expect("claim");
        let of = |c: &Claimed| c.task.workflow_execution_id;
        assert_eq!(claimed.iter().map(of).collect::<Vec<_>>(), [workflow; 2]);
        let leases: Vec<_> = claimed.iter().map(|c| c.lease).collect();
        if workflow != wf(2) {
            let completion = store.complete_many(&leases).expect("complete");
            assert_eq!(completion.completed.len(), 2);
        }
    }
    let pruned = store.prune_finished(Utc::now() + TimeDelta::seconds(1), 2, None);
    assert_eq!(pruned.expect("prune").workflows, [wf(0)]);

    let found = resume(&*store, &mut ledger, 1).expect("read back");
    // As counted: completed, events; 0 removed before.
    let counted = |i| ledger.counted(wf(i)).expect("of the run");
    let read = [0, 1, 2, 199, 200].map(|i| (counted(i).outcomes[0], counted(i).events));
    assert_eq!(read, [(0, 0), (2, 6), (0, 4), (0, 2), (0, 0)]);
    assert!(counted(0).pruned_before && !counted(1).pruned_before);
    let expected = json!({"workflows_stored": 199, "workflows_pruned": 1, "workflows_to_create": 100,
                          "tasks_finished": 2, "tasks_claimed": 2, "events": 6 + 4 + 197 * 2});
    assert_eq!(json!(found), expected);
    assert_eq!(ledger.batches_to_create(), [(2, 200..300)]);

    // The claims recovered from the dead runner, batch 2 created, everything finished.
    let run = run_on(target, &args, ledger);
    let recovered = store.list_for_workflow(wf(2)).expect("read");
    assert!(recovered.iter().all(|t| t.recovery_attempts >= 1));
    assert!(failing(&run).is_empty());
    let counts = store.count_by_status().expect("count");
    assert_eq!([counts.total(), counts.completed + counts.failed], [598; 2]);
}
