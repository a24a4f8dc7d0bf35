//! Statement counts: what each operation sends (`BEGIN`/`COMMIT` included) against the
//! backend's promise (`TestBackend::statements`, the README's table).

use super::support::{BEYOND_ONE_CHUNK, expect_err, ready_tasks, task_in, workflow};
use crate::case;
use crate::counter::Counts;
use crate::operations::Operation::{self, *};
use crate::suite::{Backend, Case, Fixture, Setup};
use chrono::TimeDelta;
use dal_core::{FailedTask, Finished, NewTaskExecution, PruneCursor, Pruned, RetriedTask};
use dal_core::{Result, SubStatus, TaskExecution, TaskStatus::*, Transition as T, validate};
use std::fmt::Debug;
use uuid::Uuid;

pub const CASES: &[Case] = &[case!(every_operation_sends_the_documented_statements)];

/// One pass over every operation: what each sent.
struct Pass<'a>(&'a Fixture, Vec<(Operation, Counts)>);

impl Pass<'_> {
    fn ok<R>(&mut self, op: Operation, call: impl FnOnce() -> Result<R>) -> R {
        let (answer, counts) = self.0.log.measure(call);
        self.1.push((op, counts));
        answer.unwrap()
    }

    fn err<R: Debug>(&mut self, op: Operation, call: impl FnOnce() -> Result<R>) {
        let (answer, counts) = self.0.log.measure(call);
        self.1.push((op, counts));
        expect_err(answer);
    }
}

/// Runs every operation of [`Operation::ALL`] once and returns what each sent.
fn run_all(f: &Fixture, pass: usize) -> Vec<(Operation, Counts)> {
    let (s, p) = (f.store(), &mut Pass(f, Vec::new()));
    let wf = workflow();
    let new = |name: &str| NewTaskExecution::new(wf, format!("{name}-{pass}")).with_max_attempts(3);
    let many = |n| (0..n).map(move |i| new(&format!("{n}.{i}")));
    let hundred: Vec<_> = many(100).collect();
    let big: Vec<_> = many(BEYOND_ONE_CHUNK).collect();
    let id = p.ok(Create, || s.create(&new("t"))).id;
    assert_eq!(p.ok(CreateMany100, || s.create_many(&hundred)).len(), 100);
    let created = p.ok(CreateMany7000, || s.create_many(&big));
    assert_eq!(created.len(), big.len());
    assert_eq!(p.ok(CreateManyNone, || s.create_many(&[])), []);
    assert_eq!(p.ok(Get, || s.get(id)).id, id);
    let listed = p.ok(ListForWorkflow, || s.list_for_workflow(wf));
    assert_eq!(listed.len(), big.len() + 101);
    // Made without a transition, so that mark_ready below is the first UPDATE of the pass.
    let other = s.create(&new("other")).unwrap().id;
    let now = f.now();
    #[rustfmt::skip]
    let transitions = [
        (MarkReady, id, T::MarkReady, Ready), (MarkRunning, id, T::MarkRunning, Running),
        (MarkCompleted, id, T::MarkCompleted, Completed),
        (ResetRetryState, id, T::ResetRetryState, Ready),
        (MarkFailed, id, T::MarkFailed { error: "e".into() }, Failed),
        (ScheduleRetry, id, T::ScheduleRetry { retry_at: now }, Ready),
        (ResetTaskForRecovery, id, T::ResetForRecovery, Ready),
        (MarkSkipped, id, T::MarkSkipped { reason: "r".into() }, Skipped),
        (MarkAbandoned, other, T::MarkAbandoned { reason: "r".into() }, Failed),
    ];
    for (op, task, transition, status) in transitions {
        assert_eq!(p.ok(op, || s.transition(task, transition)).status, status);
    }
    let running = task_in(s, wf, &format!("deferred-{pass}"), Running, 3).id;
    let deferred = Some(SubStatus::Deferred);
    let row = p.ok(SetSubStatus, || s.set_sub_status(running, deferred));
    assert_eq!(row.sub_status, deferred);
    p.err(RejectedTransition, || s.mark_completed(id));
    let bad = new("bad").with_max_attempts(0);
    p.err(RejectedInput, || s.create(&bad));
    run_claims(f, p);
    // Events, unless the history is off.
    let kept = f.keeps_history();
    let events = p.ok(EventsForTask, || s.events_for_task(id));
    assert_eq!(events.is_empty(), !kept);
    let page = |limit| s.events_for_workflow(wf, None, limit);
    assert_eq!(p.ok(EventsForWorkflow, || page(100)).is_empty(), !kept);
    assert_eq!(p.ok(EventsForWorkflowLimit0, || page(0)), []);
    let wfs = [wf, workflow()];
    p.ok(PendingTasks, || s.pending_tasks(&wfs));
    p.ok(TaskStatuses, || s.task_statuses(wf, &["a", "b"]));
    p.ok(StatusesForWorkflows, || s.statuses_for_workflows(&wfs));
    assert!(!p.ok(IsWorkflowComplete, || s.is_workflow_complete(wf)));
    p.ok(CompleteWorkflows, || s.complete_workflows(&wfs));
    assert!(p.ok(HasAbandonedTask, || s.has_abandoned_task(wf)));
    assert!(p.ok(RetryStats, || s.retry_stats(wf)).max_attempt >= 1);
    p.ok(ExhaustedTasks, || s.exhausted_tasks(wf));
    assert_eq!(p.ok(DeferredTasks, || s.deferred_tasks(&wfs)).len(), 1);
    assert!(p.ok(CountByStatus, || s.count_by_status()).total() > 0);
    let none = p.ok(WorkflowReadsOfNoIds, || {
        let pending = s.pending_tasks(&[])?.len() + s.statuses_for_workflows(&[])?.len();
        Ok(pending + s.complete_workflows(&[])?.len() + s.task_statuses(wf, &[])?.len())
    });
    assert_eq!(none, 0);
    run_prune(f, p);
    std::mem::take(&mut p.1)
}

/// Retention's part of [`run_all`]: each batch starts from a cursor just before its tasks.
fn run_prune(f: &Fixture, p: &mut Pass) {
    let s = f.store();
    let finish = |wf, name: &str| {
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
    let doomed = finish(gone, "a");
    finish(gone, "b");
    let older_than = f.tick();
    let batch = |limit, t: &TaskExecution| {
        let completed_at = t.completed_at.unwrap();
        let after = PruneCursor { completed_at, task_id: Uuid::nil() };
        s.prune_finished(older_than, limit, Some(after))
    };
    let pruned = p.ok(PruneRemoving, || batch(2, &doomed));
    assert_eq!((pruned.workflows, pruned.tasks), (vec![gone], 2));
    let pruned = p.ok(PruneNoneFinished, || batch(1, &scanned));
    let next = pruned.next.map(|c| c.task_id);
    assert_eq!((pruned.workflows, next), (vec![], Some(scanned.id)));
    let earliest = validate::earliest_time();
    let pruned = p.ok(PruneNothing, || s.prune_finished(earliest, 10, None));
    assert_eq!(pruned, Pruned::default());
    p.err(PruneRejected, || s.prune_finished(older_than, 0, None));
}

/// The runner protocol's part of [`run_all`].
fn run_claims(f: &Fixture, p: &mut Pass) {
    let s = f.store();
    let runner = Uuid::now_v7();
    ready_tasks(s, workflow(), 1 + 32 + 1_000, 1);
    let one = p.ok(Claim1, || s.claim_ready(runner, 1));
    let some = p.ok(Claim32, || s.claim_ready(runner, 32));
    let many = p.ok(Claim1000, || s.claim_ready(runner, 1_000));
    assert_eq!((one.len(), some.len(), many.len()), (1, 32, 1_000));
    let target = ready_tasks(s, workflow(), 1, 1).remove(0).id;
    let targeted = p.ok(ClaimTask, || s.claim_task(target, runner));
    p.err(ClaimTaskRejected, || s.claim_task(target, runner));
    // Finished, so that only the batches below are left claimed for the sweep.
    s.complete(&targeted.lease).unwrap();
    assert_eq!(p.ok(ClaimLimit0, || s.claim_ready(runner, 0)), []);
    let lease = one[0].lease;
    assert_eq!(p.ok(Heartbeat, || s.heartbeat(&lease)).status, Running);
    assert_eq!(p.ok(Complete, || s.complete(&lease)).status, Completed);
    assert_eq!(p.ok(Fail, || s.fail(&some[0].lease, "e")).status, Failed);
    // An attempt left, claimed alone; retried in an hour, so that no claim below takes it.
    let retried = ready_tasks(s, workflow(), 1, 2).remove(0);
    let held = s.claim_task(retried.id, runner).unwrap().lease;
    let later = f.now() + TimeDelta::hours(1);
    let row = p.ok(FailAndRetry, || s.fail_and_retry(&held, "e", later));
    assert_eq!(row.attempt, 2);
    assert_eq!(p.ok(Release, || s.release(&some[1].lease)).status, Ready);
    p.err(RejectedLease, || s.complete(&lease));
    let batch: Vec<_> = some[2..].iter().map(|c| c.lease).collect();
    let done = p.ok(CompleteMany30, || s.complete_many(&batch));
    assert_eq!(done.completed.len(), 30);
    // Runner cycles on 94 claimed (64 + 30: shapes of events other operations use on SQLite).
    ready_tasks(s, workflow(), 190, 2);
    let mut held = s.claim_ready(runner, 64).unwrap();
    held.extend(s.claim_ready(runner, 30).unwrap());
    let mut next: Vec<_> = held[90..94].iter().map(|c| c.lease).collect();
    let fail = |i: usize| FailedTask { lease: held[i].lease, error: "e".into() };
    let retry = |i: usize| RetriedTask { lease: held[i].lease, error: "e".into(), retry_at: later };
    for (op, done, failed, retried) in [
        (FinishAndClaim, 0..30, 0..0, 0..0),
        (FinishAndClaimFailing, 30..58, 58..60, 0..0),
        (FinishAndClaimRetrying, 60..88, 0..0, 88..90),
    ] {
        let finished = Finished {
            completed: done.clone().map(|i| held[i].lease).collect(),
            failed: failed.clone().map(fail).collect(),
            retried: retried.clone().map(retry).collect(),
        };
        let c = p.ok(op, || s.finish_and_claim(runner, &finished, 32));
        let sizes = [&c.completed, &c.failed, &c.retried].map(Vec::len);
        let want = [done.len(), failed.len(), retried.len()];
        assert_eq!((sizes, c.claimed.len()), (want, 32));
        next.extend(c.claimed.iter().map(|c| c.lease));
    }
    let nothing = Finished::default();
    let cycle = p.ok(FinishAndClaimNothing, || s.finish_and_claim(runner, &nothing, 0));
    assert_eq!(cycle, dal_core::Cycle::default());
    assert_eq!(s.complete_many(&next).unwrap().completed.len(), 100);
    // Only the 1,000 are claimed now; they go stale, then one more.
    f.clock.advance(TimeDelta::minutes(1));
    let stale = f.now() - TimeDelta::seconds(30);
    assert_eq!(p.ok(FindStaleClaims, || s.find_stale_claims(stale)).len(), 1_000);
    assert_eq!(p.ok(Recover1000, || s.recover_stale_claims(stale, 5)).reset.len(), 1_000);
    s.claim_ready(runner, 1).unwrap();
    f.clock.advance(TimeDelta::minutes(1));
    let stale = f.now() - TimeDelta::seconds(30);
    assert_eq!(p.ok(Recover1, || s.recover_stale_claims(stale, 5)).reset.len(), 1);
    assert!(!p.ok(ListReady, || s.list_ready(10)).is_empty());
    while let rest @ [_, ..] = &s.claim_ready(runner, 1_000).unwrap()[..] {
        s.complete_many(&rest.iter().map(|c| c.lease).collect::<Vec<_>>()).unwrap();
    }
    assert_eq!(p.ok(ClaimNoneReady, || s.claim_ready(runner, 10)), []);
    assert_eq!(p.ok(ListDueRetries, || s.list_due_retries(10)), []);
}

/// Every operation sends its row of the table, first and later; each fixed statement is prepared
/// once per connection (never SQLite's INSERTs of over 1,024 rows), a prune batch's at first use.
fn every_operation_sends_the_documented_statements(kind: Backend) {
    // One connection, so "first use" is first use of the whole store.
    let setup = Setup { pool_size: 1, ..Setup::default() };
    let f = Fixture::with(kind, setup);
    let (first, second) = (run_all(&f, 1), run_all(&f, 2));
    let mut measured: Vec<&str> = first.iter().map(|(op, _)| op.label()).collect();
    let mut table: Vec<&str> = Operation::ALL.iter().map(|op| op.label()).collect();
    measured.sort_unstable();
    table.sort_unstable();
    assert_eq!(measured, table, "the operations measured are the table's");
    for ((op, cold), (_, warm)) in first.iter().zip(&second) {
        let (name, expected) = (op.label(), kind.statements(*op));
        if std::env::var_os("DAL_PRINT_STATEMENTS").is_some() {
            let (sent, prepared) = (warm.statements, cold.prepares);
            eprintln!("{kind}: {name} | {sent} | {prepared} prepared");
        }
        let sent = (cold.statements, warm.statements, warm.prepares);
        let promised = (expected, expected, 0);
        assert_eq!(sent, promised, "{kind} {name}: {cold:#?} {warm:#?}");
        if expected == 1 {
            let verb = warm.sql[0].split_whitespace().next().unwrap_or_default();
            let verb = verb.to_ascii_uppercase();
            let plain = ["INSERT", "UPDATE", "SELECT", "WITH"].contains(&verb.as_str());
            assert!(plain && warm.transactions == 0, "{kind} {name}: {warm:#?}");
        }
        if *op == PruneRemoving {
            let prepared = kind.prepared_per_prune_batch();
            assert_eq!(cold.prepares, prepared, "{kind}: {cold:#?}");
        }
    }
    let prepared: usize = first.iter().map(|(_, c)| c.prepares).sum();
    let promised = kind.prepared_per_connection();
    assert_eq!(prepared, promised, "{kind}: {first:#?}");
}
