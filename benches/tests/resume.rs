//! `--resume`'s reading of what a dead process left, on a database brought by hand (through the
//! store) into each state a kill can leave: a workflow execution pruned, one with a task failed
//! and not yet retried and a task still claimed by the dead runner, one finished, a batch
//! created but not recorded, a batch never created. Then the resumed run finishes the work and
//! every check passes (on SQLite, no server needed).
#![allow(clippy::expect_used)] // test helpers: a failed setup is a failed test

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use clap::Parser;
use dal_benches::workload::args::Args;
use dal_benches::workload::checks::run_checks;
use dal_benches::workload::ledger::Counted;
use dal_benches::workload::plan::{Before, Plan, Retry, workflow_id};
use dal_benches::workload::run;
use dal_benches::workload::target::Target;
use dal_core::{Claimed, NewTaskExecution, TaskExecutionStore, TaskStatus};
use dal_tests::counter::StatementCounter;
use uuid::Uuid;

fn stored(completed: u64, events: u64) -> Before {
    Before::Stored(Counted {
        completed,
        events,
        ..Counted::default()
    })
}

/// Claims the next two tasks, which must be those of `workflow`.
fn claim_two(store: &dyn TaskExecutionStore, runner: Uuid, workflow: Uuid) -> Vec<Claimed> {
    let claimed = store.claim_ready(runner, 2).expect("claim");
    let workflows: Vec<Uuid> = claimed
        .iter()
        .map(|c| c.task.workflow_execution_id)
        .collect();
    assert_eq!(workflows, vec![workflow, workflow]);
    claimed
}

/// Claims and completes the two tasks of `workflow`, the next ones due.
fn complete_two(store: &dyn TaskExecutionStore, runner: Uuid, workflow: Uuid) {
    let leases: Vec<_> = claim_two(store, runner, workflow)
        .iter()
        .map(|c| c.lease)
        .collect();
    let completion = store.complete_many(&leases).expect("complete");
    assert_eq!((completion.completed.len(), completion.lost.len()), (2, 0));
}

#[test]
fn a_resumed_run_reads_what_a_dead_process_left_and_finishes_it() {
    let args = Args::parse_from([
        "workload",
        "--quiet",
        "--workflows",
        "300",
        "--tasks-per-workflow",
        "2",
        "--runners",
        "2",
        "--stale-after-ms",
        "10",
        "--sweep-every-ms",
        "5",
        "--prune-every-ms",
        "0",
    ]);
    let target = Target::open(&args).expect("create the database");
    let store = target.connect(&StatementCounter::new()).expect("open");
    let run_id = Uuid::now_v7();
    let wf = |i| workflow_id(run_id, i);
    // Batches 0 and 1 (workflow executions 0 to 199) created; the record says 1 (the process
    // died before recording the second).
    let news: Vec<NewTaskExecution> = (0..200)
        .flat_map(|i| {
            (0..2).map(move |t| {
                NewTaskExecution::new(wf(i), format!("task-{t}"))
                    .with_status(TaskStatus::Ready)
                    .with_max_attempts(3)
            })
        })
        .collect();
    store.create_many(&news).expect("create");
    let dead = Uuid::now_v7();
    // Workflow execution 0: finished, then pruned.
    complete_two(&*store, dead, wf(0));
    let pruned = store
        .prune_finished(Utc::now() + TimeDelta::seconds(1), 100, None)
        .expect("prune");
    assert_eq!(pruned.workflows, vec![wf(0)]);
    // Workflow execution 1: one task failed on its first attempt, not retried; one claimed.
    let claimed = claim_two(&*store, dead, wf(1));
    let failed = store.fail(&claimed[0].lease, "crashed").expect("fail");
    assert_eq!((failed.attempt, failed.max_attempts), (1, 3));
    // Workflow execution 2: finished.
    complete_two(&*store, dead, wf(2));

    let plan = Plan::resume(&*store, run_id, 300, 1).expect("read back");
    assert_eq!(plan.run_id, run_id);
    assert_eq!(plan.workflows, (0..300).map(wf).collect::<Vec<_>>());
    let mut before = vec![Before::Pruned, stored(0, 5), stored(2, 6)];
    before.extend(std::iter::repeat_n(stored(0, 2), 197));
    before.extend(std::iter::repeat_n(Before::Nothing, 100));
    assert_eq!(plan.before, before);
    assert_eq!(
        plan.retries,
        vec![Retry {
            task: failed.id,
            workflow: wf(1)
        }]
    );
    let resumed = plan.resumed.clone().expect("resumed");
    assert_eq!(
        (
            resumed.run_id.as_str(),
            resumed.workflows_stored,
            resumed.workflows_pruned,
            resumed.workflows_to_create,
            resumed.tasks_finished,
            resumed.tasks_claimed,
            resumed.tasks_to_retry,
            resumed.events
        ),
        (
            run_id.to_string().as_str(),
            199,
            1,
            100,
            2,
            1,
            1,
            5 + 6 + 197 * 2
        )
    );
    let batches: Vec<(u64, usize)> = plan
        .batches_to_create()
        .map(|(n, b)| (n, b.len()))
        .collect();
    assert_eq!(batches, vec![(2, 100)]);

    // The resumed run: the failed task retried, the claimed one recovered, batch 2 created.
    // In a thread: a run that cannot finish (a task it does not know how to end) waits forever.
    let (done, finished) = std::sync::mpsc::channel();
    {
        let (store, args, plan) = (Arc::clone(&store), args.clone(), plan.clone());
        std::thread::spawn(move || done.send(run::run(store, &args, &plan, None)));
    }
    let finished = finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("the resumed run did not end in 2 minutes");
    assert_eq!(finished.error, None);
    // Retried, then claimed again: a second attempt.
    assert!(store.get(failed.id).expect("get").attempt >= 2);
    // Recovered from the dead runner by the sweeper.
    assert!(
        store
            .get(claimed[1].task.id)
            .expect("get")
            .recovery_attempts
            >= 1
    );
    let checks = run_checks(&*store, &finished.ledger, &finished.outcomes).expect("check");
    assert_eq!(checks.len(), 7);
    for check in &checks {
        assert!(check.passed, "{check:?}");
    }
    assert!(
        checks[0].detail.contains("2 pruned before the run resumed"),
        "{checks:?}"
    );
    let counts = store.count_by_status().expect("count");
    assert_eq!(counts.total(), 598);
    assert_eq!(counts.completed + counts.failed, 598);
}
