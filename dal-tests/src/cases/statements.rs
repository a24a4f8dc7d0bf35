//! Statement counts: how many statements each operation sends, counted by Diesel's connection
//! instrumentation (every statement, `BEGIN`/`COMMIT` included), against the counts the backend
//! promises (`TestBackend::statements`), which the README's table shows.

use std::fmt::Write as _;

use dal_core::{
    FailedTask, Finished, NewTaskExecution, PruneCursor, Pruned, RetriedTask, TaskExecution,
    TaskExecutionStore, TaskStatus, validate,
};
use uuid::Uuid;

use super::support::BEYOND_ONE_CHUNK;
use super::support::{expect_err, ready_tasks, workflow};
use crate::case;
use crate::counter::Counts;
use crate::operations::Operation;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::{Fixture, Setup};

/// The cases of this group.
pub const CASES: &[Case] = &[case!(every_operation_sends_the_documented_statements)];

/// Runs every operation of [`Operation::ALL`] once on a fresh task and returns what each sent.
fn run_all(f: &Fixture, pass: usize) -> Vec<(Operation, Counts)> {
    let s: &dyn TaskExecutionStore = f.store();
    let mut out = Vec::new();
    let mut measure = |name: Operation, op: &mut dyn FnMut()| out.push((name, f.log.measure(op).1));
    let wf = workflow();
    let new = |name: &str| NewTaskExecution::new(wf, format!("{name}-{pass}")).with_max_attempts(3);
    let many = |n: usize, tag: &str| -> Vec<NewTaskExecution> {
        (0..n)
            .map(|i| NewTaskExecution::new(wf, format!("{tag}-{pass}-{i}")))
            .collect()
    };
    let mut task: Option<TaskExecution> = None;
    measure(Operation::Create, &mut || {
        task = Some(s.create(&new("t")).unwrap())
    });
    let id = task.unwrap().id;
    let batch = many(100, "hundred");
    measure(Operation::CreateMany100, &mut || {
        assert_eq!(s.create_many(&batch).unwrap().len(), 100)
    });
    let big = many(BEYOND_ONE_CHUNK, "big");
    measure(Operation::CreateMany7000, &mut || {
        assert_eq!(s.create_many(&big).unwrap().len(), BEYOND_ONE_CHUNK)
    });
    measure(Operation::CreateManyNone, &mut || {
        assert!(s.create_many(&[]).unwrap().is_empty())
    });
    measure(Operation::Get, &mut || {
        assert_eq!(s.get(id).unwrap().id, id)
    });
    measure(Operation::ListForWorkflow, &mut || {
        assert!(!s.list_for_workflow(wf).unwrap().is_empty())
    });
    let now = f.now();
    // Made without a transition, so that mark_ready below is the first UPDATE of the pass.
    let other = s.create(&new("other")).unwrap().id;
    let steps: [(Operation, &dyn Fn() -> TaskExecution, TaskStatus); 9] = [
        (
            Operation::MarkReady,
            &|| s.mark_ready(id).unwrap(),
            TaskStatus::Ready,
        ),
        (
            Operation::MarkRunning,
            &|| s.mark_running(id).unwrap(),
            TaskStatus::Running,
        ),
        (
            Operation::MarkCompleted,
            &|| s.mark_completed(id).unwrap(),
            TaskStatus::Completed,
        ),
        (
            Operation::ResetRetryState,
            &|| s.reset_retry_state(id).unwrap(),
            TaskStatus::Ready,
        ),
        (
            Operation::MarkFailed,
            &|| s.mark_failed(id, "e").unwrap(),
            TaskStatus::Failed,
        ),
        (
            Operation::ScheduleRetry,
            &|| s.schedule_retry(id, now).unwrap(),
            TaskStatus::Ready,
        ),
        (
            Operation::ResetTaskForRecovery,
            &|| s.reset_task_for_recovery(id).unwrap(),
            TaskStatus::Ready,
        ),
        (
            Operation::MarkSkipped,
            &|| s.mark_skipped(id, "r").unwrap(),
            TaskStatus::Skipped,
        ),
        (
            Operation::MarkAbandoned,
            &|| s.mark_abandoned(other, "r").unwrap(),
            TaskStatus::Failed,
        ),
    ];
    for (name, step, status) in steps {
        measure(name, &mut || assert_eq!(step().status, status));
    }
    let running = s.create(&new("deferred")).unwrap().id;
    s.mark_ready(running).unwrap();
    s.mark_running(running).unwrap();
    measure(Operation::SetSubStatus, &mut || {
        assert_eq!(
            s.set_sub_status(running, Some(dal_core::SubStatus::Deferred))
                .unwrap()
                .sub_status,
            Some(dal_core::SubStatus::Deferred)
        )
    });
    measure(Operation::RejectedTransition, &mut || {
        expect_err(s.mark_completed(id));
    });
    measure(Operation::RejectedInput, &mut || {
        expect_err(s.create(&NewTaskExecution {
            max_attempts: 0,
            ..new("bad")
        }));
    });
    run_claims(f, pass, &mut measure);
    // Events, unless the history is off.
    let kept = f.keeps_history();
    measure(Operation::EventsForTask, &mut || {
        assert_eq!(!s.events_for_task(id).unwrap().is_empty(), kept)
    });
    measure(Operation::EventsForWorkflow, &mut || {
        assert_eq!(
            !s.events_for_workflow(wf, None, 100).unwrap().is_empty(),
            kept
        )
    });
    measure(Operation::EventsForWorkflowLimit0, &mut || {
        assert!(s.events_for_workflow(wf, None, 0).unwrap().is_empty())
    });
    let wfs = [wf, workflow()];
    measure(Operation::PendingTasks, &mut || {
        drop(s.pending_tasks(&wfs).unwrap())
    });
    measure(Operation::TaskStatuses, &mut || {
        drop(s.task_statuses(wf, &["a", "b"]).unwrap())
    });
    measure(Operation::StatusesForWorkflows, &mut || {
        drop(s.statuses_for_workflows(&wfs).unwrap())
    });
    measure(Operation::IsWorkflowComplete, &mut || {
        assert!(!s.is_workflow_complete(wf).unwrap())
    });
    measure(Operation::CompleteWorkflows, &mut || {
        drop(s.complete_workflows(&wfs).unwrap())
    });
    measure(Operation::HasAbandonedTask, &mut || {
        assert!(s.has_abandoned_task(wf).unwrap())
    });
    measure(Operation::RetryStats, &mut || {
        assert!(s.retry_stats(wf).unwrap().max_attempt >= 1)
    });
    measure(Operation::ExhaustedTasks, &mut || {
        drop(s.exhausted_tasks(wf).unwrap())
    });
    measure(Operation::DeferredTasks, &mut || {
        assert_eq!(s.deferred_tasks(&wfs).unwrap().len(), 1)
    });
    measure(Operation::CountByStatus, &mut || {
        assert!(s.count_by_status().unwrap().total() > 0)
    });
    measure(Operation::WorkflowReadsOfNoIds, &mut || {
        assert!(s.pending_tasks(&[]).unwrap().is_empty());
        assert!(s.statuses_for_workflows(&[]).unwrap().is_empty());
        assert!(s.complete_workflows(&[]).unwrap().is_empty());
        assert!(s.task_statuses(wf, &[]).unwrap().is_empty());
    });
    run_prune(f, &mut measure);
    out
}

/// Retention's part of [`run_all`], on workflow executions of its own: each batch starts from a
/// cursor just before the tasks it is meant to scan, whatever else the pass left finished.
fn run_prune(f: &Fixture, measure: &mut dyn FnMut(Operation, &mut dyn FnMut())) {
    let s: &dyn TaskExecutionStore = f.store();
    let finish = |wf: Uuid, name: &str| {
        let id = s.create(&NewTaskExecution::new(wf, name)).unwrap().id;
        s.mark_skipped(id, "r").unwrap()
    };
    // Finished alone at its time: a task of a workflow execution that has an unfinished one.
    let busy = workflow();
    s.create(&NewTaskExecution::new(busy, "open")).unwrap();
    f.tick();
    let scanned = finish(busy, "done");
    // Two finished tasks, alone at their time, of one workflow execution.
    let gone = workflow();
    f.tick();
    let doomed = [finish(gone, "a"), finish(gone, "b")];
    let older_than = f.tick();
    let from = |task: &TaskExecution| {
        Some(PruneCursor {
            completed_at: task.completed_at.unwrap(),
            task_id: Uuid::nil(),
        })
    };
    measure(Operation::PruneRemoving, &mut || {
        let pruned = s.prune_finished(older_than, 2, from(&doomed[0])).unwrap();
        assert_eq!(
            (pruned.workflows.as_slice(), pruned.tasks),
            (&[gone][..], 2)
        );
    });
    measure(Operation::PruneNoneFinished, &mut || {
        let pruned = s.prune_finished(older_than, 1, from(&scanned)).unwrap();
        assert_eq!(
            (pruned.workflows.len(), pruned.next.map(|c| c.task_id)),
            (0, Some(scanned.id))
        );
    });
    measure(Operation::PruneNothing, &mut || {
        assert_eq!(
            s.prune_finished(validate::earliest_time(), 10, None)
                .unwrap(),
            Pruned::default()
        )
    });
    measure(Operation::PruneRejected, &mut || {
        expect_err(s.prune_finished(older_than, 0, None));
    });
}

/// The runner protocol's part of [`run_all`].
fn run_claims(f: &Fixture, pass: usize, measure: &mut dyn FnMut(Operation, &mut dyn FnMut())) {
    let s: &dyn TaskExecutionStore = f.store();
    let runner = uuid::Uuid::now_v7();
    ready_tasks(s, workflow(), 1 + 32 + 1_000, 1);
    let mut one = Vec::new();
    let mut some = Vec::new();
    let mut many = Vec::new();
    measure(Operation::Claim1, &mut || {
        one = s.claim_ready(runner, 1).unwrap()
    });
    measure(Operation::Claim32, &mut || {
        some = s.claim_ready(runner, 32).unwrap()
    });
    measure(Operation::Claim1000, &mut || {
        many = s.claim_ready(runner, 1_000).unwrap()
    });
    assert_eq!(
        (one.len(), some.len(), many.len()),
        (1, 32, 1_000),
        "pass {pass}"
    );
    let target = ready_tasks(s, workflow(), 1, 1).remove(0);
    let mut targeted = None;
    measure(Operation::ClaimTask, &mut || {
        targeted = Some(s.claim_task(target.id, runner).unwrap())
    });
    measure(Operation::ClaimTaskRejected, &mut || {
        expect_err(s.claim_task(target.id, runner));
    });
    // Finished, so that only the batches below are left claimed for the sweep.
    s.complete(&targeted.unwrap().lease).unwrap();
    measure(Operation::ClaimLimit0, &mut || {
        assert!(s.claim_ready(runner, 0).unwrap().is_empty())
    });
    let lease = one[0].lease;
    measure(Operation::Heartbeat, &mut || {
        assert_eq!(s.heartbeat(&lease).unwrap().status, TaskStatus::Running)
    });
    measure(Operation::Complete, &mut || {
        assert_eq!(s.complete(&lease).unwrap().status, TaskStatus::Completed)
    });
    measure(Operation::Fail, &mut || {
        assert_eq!(
            s.fail(&some[0].lease, "e").unwrap().status,
            TaskStatus::Failed
        )
    });
    // A task with an attempt left, claimed by itself; retried an hour from now, so that no
    // claim below takes it.
    let retried = ready_tasks(s, workflow(), 1, 2).remove(0);
    let held = s.claim_task(retried.id, runner).unwrap();
    let later = f.now() + chrono::TimeDelta::hours(1);
    measure(Operation::FailAndRetry, &mut || {
        assert_eq!(
            s.fail_and_retry(&held.lease, "e", later).unwrap().attempt,
            2
        )
    });
    measure(Operation::Release, &mut || {
        assert_eq!(s.release(&some[1].lease).unwrap().status, TaskStatus::Ready)
    });
    measure(Operation::RejectedLease, &mut || {
        expect_err(s.complete(&lease));
    });
    let batch: Vec<dal_core::Lease> = some[2..].iter().map(|c| c.lease).collect();
    measure(Operation::CompleteMany30, &mut || {
        assert_eq!(s.complete_many(&batch).unwrap().completed.len(), 30)
    });
    // Runner cycles: 94 claimed, then finished 30 (and 28 + 2 failed, and 28 + 2 retried)
    // while claiming 32 more.
    ready_tasks(s, workflow(), 190, 2);
    // In two claims, whose events' shapes (64 and 32 rows on SQLite) other operations use too.
    let mut held = s.claim_ready(runner, 64).unwrap();
    held.extend(s.claim_ready(runner, 30).unwrap());
    let leases = |range: std::ops::Range<usize>| -> Vec<dal_core::Lease> {
        held[range].iter().map(|c| c.lease).collect()
    };
    let mut next = Vec::new();
    let finished = Finished {
        retried: Vec::new(),
        completed: leases(0..30),
        failed: Vec::new(),
    };
    measure(Operation::FinishAndClaim, &mut || {
        let cycle = s.finish_and_claim(runner, &finished, 32).unwrap();
        assert_eq!((cycle.completed.len(), cycle.claimed.len()), (30, 32));
        next.extend(cycle.claimed.into_iter().map(|c| c.lease));
    });
    let finished = Finished {
        retried: Vec::new(),
        completed: leases(30..58),
        failed: held[58..60]
            .iter()
            .map(|c| FailedTask {
                lease: c.lease,
                error: "e".into(),
            })
            .collect(),
    };
    measure(Operation::FinishAndClaimFailing, &mut || {
        let cycle = s.finish_and_claim(runner, &finished, 32).unwrap();
        assert_eq!(
            (
                cycle.completed.len(),
                cycle.failed.len(),
                cycle.claimed.len()
            ),
            (28, 2, 32)
        );
        next.extend(cycle.claimed.into_iter().map(|c| c.lease));
    });
    let finished = Finished {
        retried: held[88..90]
            .iter()
            .map(|c| RetriedTask {
                lease: c.lease,
                error: "e".into(),
                retry_at: f.now() + chrono::TimeDelta::hours(1),
            })
            .collect(),
        completed: leases(60..88),
        failed: Vec::new(),
    };
    measure(Operation::FinishAndClaimRetrying, &mut || {
        let cycle = s.finish_and_claim(runner, &finished, 32).unwrap();
        assert_eq!(
            (
                cycle.completed.len(),
                cycle.retried.len(),
                cycle.claimed.len()
            ),
            (28, 2, 32)
        );
        next.extend(cycle.claimed.into_iter().map(|c| c.lease));
    });
    measure(Operation::FinishAndClaimNothing, &mut || {
        assert_eq!(
            s.finish_and_claim(runner, &Finished::default(), 0).unwrap(),
            dal_core::Cycle::default()
        )
    });
    next.extend(leases(90..94));
    assert_eq!(s.complete_many(&next).unwrap().completed.len(), 100);
    // Only the 1,000 are claimed now; they go stale.
    f.clock.advance(chrono::TimeDelta::minutes(1));
    let threshold = f.now() - chrono::TimeDelta::seconds(30);
    measure(Operation::FindStaleClaims, &mut || {
        assert_eq!(s.find_stale_claims(threshold).unwrap().len(), 1_000)
    });
    measure(Operation::Recover1000, &mut || {
        assert_eq!(
            s.recover_stale_claims(threshold, 5).unwrap().reset.len(),
            1_000
        )
    });
    s.claim_ready(runner, 1).unwrap();
    f.clock.advance(chrono::TimeDelta::minutes(1));
    let threshold = f.now() - chrono::TimeDelta::seconds(30);
    measure(Operation::Recover1, &mut || {
        assert_eq!(s.recover_stale_claims(threshold, 5).unwrap().reset.len(), 1)
    });
    measure(Operation::ListReady, &mut || {
        assert!(!s.list_ready(10).unwrap().is_empty())
    });
    loop {
        let rest = s.claim_ready(runner, 1_000).unwrap();
        if rest.is_empty() {
            break;
        }
        for claim in rest {
            s.complete(&claim.lease).unwrap();
        }
    }
    measure(Operation::ClaimNoneReady, &mut || {
        assert!(s.claim_ready(runner, 10).unwrap().is_empty())
    });
    measure(Operation::ListDueRetries, &mut || {
        assert!(s.list_due_retries(10).unwrap().is_empty())
    });
}

fn every_operation_sends_the_documented_statements(kind: Backend) {
    // One connection, so "first use" is first use of the whole store.
    let f = Fixture::with(
        kind,
        Setup {
            pool_size: 1,
            ..Default::default()
        },
    );
    let first = run_all(&f, 1);
    let second = run_all(&f, 2);
    let mut report = format!("{kind}: operation | statements | prepared on first use\n");
    for ((op, cold), (_, warm)) in first.iter().zip(&second) {
        writeln!(
            report,
            "{} | {} | {}",
            op.label(),
            warm.statements,
            cold.prepares
        )
        .unwrap();
    }
    if std::env::var_os("DAL_PRINT_STATEMENTS").is_some() {
        eprintln!("{report}");
    }
    let mut measured: Vec<&str> = first.iter().map(|(op, _)| op.label()).collect();
    let mut table: Vec<&str> = Operation::ALL.iter().map(|op| op.label()).collect();
    measured.sort_unstable();
    table.sort_unstable();
    assert_eq!(measured, table, "the operations measured are the table's");
    for ((op, cold), (_, warm)) in first.iter().zip(&second) {
        let (name, expected) = (op.label(), kind.statements(*op));
        assert_eq!(
            cold.statements, expected,
            "{kind} {name} (first use): {:#?}",
            cold.sql
        );
        assert_eq!(warm.statements, expected, "{kind} {name}: {:#?}", warm.sql);
        // Once a statement is prepared on a connection it is not prepared again.
        assert_eq!(
            warm.prepares, 0,
            "{kind} {name} prepared again: {:#?}",
            warm.sql
        );
        if expected == 1 {
            assert_eq!(warm.transactions, 0, "{kind} {name}");
            let verb = warm.sql[0]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            assert!(
                ["INSERT", "UPDATE", "SELECT", "WITH"].contains(&verb.as_str()),
                "{kind} {name}: {}",
                warm.sql[0]
            );
        }
    }
    // Every statement with a fixed text is prepared once per connection, on its first use (on
    // PostgreSQL one more round trip, once); SQLite's multi-row INSERTs of more than 1,024 rows
    // vary with their row count and are never kept.
    let prepared: usize = first.iter().map(|(_, c)| c.prepares).sum();
    assert_eq!(
        prepared,
        kind.prepared_per_connection(),
        "{kind}: {first:#?}"
    );
}
