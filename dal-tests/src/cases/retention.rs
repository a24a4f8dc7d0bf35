//! Retention: `prune_finished` removes finished workflow executions, whole, in bounded batches.
//!
//! Every case builds its workflows through the public operations, makes them old with the
//! fixture's clock, and checks each batch's whole answer (the workflows, the task and event
//! counts, the cursor), that what was removed is gone from every read, and that everything else
//! reads back exactly as before.

use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::store::MAX_PRUNE_BATCH;
use dal_core::{
    DalError, ExecutionEvent, NewTaskExecution, Problem, PruneCursor, Pruned, StatusCounts,
    TaskExecution, TaskStatus, validate,
};
use uuid::Uuid;

use super::support::{expect_err, task_in, workflow};
use crate::case;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::{Fixture, Setup};
use TaskStatus::*;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(a_finished_workflow_goes_with_every_task_and_event),
    case!(a_workflow_with_an_unfinished_task_is_kept_whole),
    case!(a_workflow_changed_at_or_after_the_cut_off_is_kept),
    case!(failed_abandoned_and_skipped_tasks_are_finished),
    case!(a_pass_in_small_batches_removes_everything_eligible),
    case!(tasks_finished_in_the_same_microsecond_are_paged_by_id),
    case!(a_workflow_reset_or_retried_after_finishing_is_kept),
    case!(a_task_reset_while_the_batch_waits_for_its_lock_keeps_its_workflow),
    case!(rejected_input_sends_nothing_and_changes_nothing),
    case!(a_limit_beyond_i32_is_reported_as_given),
    case!(a_batch_keeps_its_statements_prepared),
];

/// A workflow execution as every read shows it: its rows, its history, each task's history.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    workflow: Uuid,
    tasks: Vec<TaskExecution>,
    events: Vec<ExecutionEvent>,
    by_task: Vec<Vec<ExecutionEvent>>,
}

fn snapshot(f: &Fixture, wf: Uuid) -> Snapshot {
    let tasks = f.store.list_for_workflow(wf).expect("list_for_workflow");
    let events = f
        .store
        .events_for_workflow(wf, None, u32::MAX)
        .expect("events_for_workflow");
    let by_task = tasks
        .iter()
        .map(|t| f.store.events_for_task(t.id).expect("events_for_task"))
        .collect();
    Snapshot {
        workflow: wf,
        tasks,
        events,
        by_task,
    }
}

/// Asserts that every read shows `before` exactly as it was.
fn assert_kept(f: &Fixture, before: &Snapshot) {
    assert_eq!(
        &snapshot(f, before.workflow),
        before,
        "workflow {} changed",
        before.workflow
    );
    for task in &before.tasks {
        assert_eq!(&f.store.get(task.id).expect("get"), task);
    }
}

/// Asserts that no read finds anything of `before` any more.
fn assert_gone(f: &Fixture, before: &Snapshot) {
    assert!(!before.tasks.is_empty(), "nothing to check");
    for task in &before.tasks {
        match f.store.get(task.id) {
            Err(DalError::NotFound { id }) => assert_eq!(id, task.id),
            other => panic!("task {} is still there: {other:?}", task.id),
        }
        assert_eq!(f.store.events_for_task(task.id).unwrap(), vec![]);
    }
    assert_eq!(f.store.list_for_workflow(before.workflow).unwrap(), vec![]);
    assert_eq!(
        f.store
            .events_for_workflow(before.workflow, None, u32::MAX)
            .unwrap(),
        vec![]
    );
}

/// What a batch that removed `gone` (and nothing else) reports.
fn removed(gone: &[&Snapshot], next: Option<PruneCursor>) -> Pruned {
    let mut workflows: Vec<Uuid> = gone.iter().map(|s| s.workflow).collect();
    workflows.sort_unstable();
    Pruned {
        workflows,
        tasks: gone.iter().map(|s| s.tasks.len() as u64).sum(),
        events: gone.iter().map(|s| s.events.len() as u64).sum(),
        next,
    }
}

/// The cursor that points at `task` (finished).
fn cursor(task: &TaskExecution) -> PruneCursor {
    PruneCursor {
        completed_at: task.completed_at.expect("a finished task"),
        task_id: task.id,
    }
}

/// The tasks of `statuses`, in workflow `wf`, named after their status and position.
fn tasks_in(f: &Fixture, wf: Uuid, statuses: &[TaskStatus]) -> Vec<TaskExecution> {
    statuses
        .iter()
        .enumerate()
        .map(|(i, status)| task_in(f.store(), wf, &format!("{status}-{i}"), *status, 3))
        .collect()
}

/// Counts by status of `snapshots`' tasks.
fn counts_of(snapshots: &[&Snapshot]) -> StatusCounts {
    let mut counts = StatusCounts::default();
    for task in snapshots.iter().flat_map(|s| &s.tasks) {
        add_count(&mut counts, task.status);
    }
    counts
}

fn a_finished_workflow_goes_with_every_task_and_event(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let done = workflow();
    // Failed, retried, then completed: seven events.
    let retried = task_in(s, done, "retried", Failed, 3);
    s.schedule_retry(retried.id, f.now()).unwrap();
    s.mark_running(retried.id).unwrap();
    s.mark_completed(retried.id).unwrap();
    f.tick();
    tasks_in(&f, done, &[Failed, Skipped, Completed]);
    // Another workflow, not finished, and one that finished later than the cut-off.
    let busy = workflow();
    tasks_in(&f, busy, &[Completed, Running, NotStarted]);
    let gone = snapshot(&f, done);
    assert_eq!(gone.tasks.len(), 4);
    // 7 + failed (created, ready, started, failed) + skipped (created, skipped) + 4.
    assert_eq!(gone.events.len(), if f.keeps_history() { 17 } else { 0 });
    let older_than = f.tick();
    let late = workflow();
    tasks_in(&f, late, &[Completed]);
    let kept = [snapshot(&f, busy), snapshot(&f, late)];
    assert_eq!(
        s.count_by_status().unwrap(),
        StatusCounts {
            not_started: 1,
            running: 1,
            completed: 4,
            failed: 1,
            skipped: 1,
            ..StatusCounts::default()
        }
    );

    let pruned = s.prune_finished(older_than, 100, None).unwrap();

    assert_eq!(pruned, removed(&[&gone], None));
    assert_eq!(
        pruned,
        Pruned {
            workflows: vec![done],
            tasks: 4,
            events: gone.events.len() as u64,
            next: None
        }
    );
    assert_gone(&f, &gone);
    for snapshot in &kept {
        assert_kept(&f, snapshot);
    }
    assert_eq!(
        s.count_by_status().unwrap(),
        counts_of(&[&kept[0], &kept[1]])
    );
    assert_eq!(
        s.count_by_status().unwrap(),
        StatusCounts {
            not_started: 1,
            running: 1,
            completed: 2,
            ..StatusCounts::default()
        }
    );
    // Nothing left to remove: the same call removes nothing.
    assert_eq!(
        s.prune_finished(older_than, 100, None).unwrap(),
        Pruned::default()
    );
    // The names are free again in that workflow execution.
    let again = s.create(&NewTaskExecution::new(done, "retried")).unwrap();
    assert_eq!(s.list_for_workflow(done).unwrap(), vec![again]);
}

fn a_workflow_with_an_unfinished_task_is_kept_whole(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let finished = [Completed, Failed, Skipped];
    // Claimed first, while it is the only Ready task.
    let claimed_wf = workflow();
    tasks_in(&f, claimed_wf, &finished);
    let waiting = task_in(s, claimed_wf, "claimed", Ready, 1);
    let claims = s.claim_ready(Uuid::now_v7(), 1).unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].task.id, waiting.id);
    let lease = claims[0].lease;
    let mut unfinished = vec![(claimed_wf, waiting.id)];
    for status in [NotStarted, Ready, Running] {
        let wf = workflow();
        tasks_in(&f, wf, &finished);
        f.tick();
        let task = task_in(s, wf, "unfinished", status, 1);
        unfinished.push((wf, task.id));
    }
    let before: Vec<Snapshot> = unfinished.iter().map(|(wf, _)| snapshot(&f, *wf)).collect();
    let older_than = f.tick();

    // Twelve old finished tasks scanned, none of their workflows finished entirely.
    assert_eq!(
        s.prune_finished(older_than, 100, None).unwrap(),
        Pruned::default()
    );
    // In batches of one: each scans one of them and removes nothing.
    let mut after = None;
    for batch in 0..12 {
        let pruned = s.prune_finished(older_than, 1, after).unwrap();
        assert_eq!(pruned.workflows, Vec::<Uuid>::new(), "batch {batch}");
        assert_eq!((pruned.tasks, pruned.events), (0, 0), "batch {batch}");
        after = Some(pruned.next.expect("a full batch has a next"));
    }
    assert_eq!(
        s.prune_finished(older_than, 1, after).unwrap(),
        Pruned::default()
    );
    for snapshot in &before {
        assert_kept(&f, snapshot);
    }

    // Once their last tasks finish, the next pass looks at them again.
    s.complete(&lease).unwrap();
    s.mark_skipped(unfinished[1].1, "not needed").unwrap();
    s.mark_failed(unfinished[2].1, "boom").unwrap();
    s.mark_completed(unfinished[3].1).unwrap();
    let now: Vec<Snapshot> = unfinished.iter().map(|(wf, _)| snapshot(&f, *wf)).collect();
    // Their last change is now: not before a cut-off of now.
    assert_eq!(
        s.prune_finished(f.now(), 100, None).unwrap(),
        Pruned::default()
    );
    let older_than = f.tick();
    let all: Vec<&Snapshot> = now.iter().collect();
    assert_eq!(
        s.prune_finished(older_than, 100, None).unwrap(),
        removed(&all, None)
    );
    for snapshot in &now {
        assert_gone(&f, snapshot);
    }
    assert_eq!(s.count_by_status().unwrap(), StatusCounts::default());
}

fn a_workflow_changed_at_or_after_the_cut_off_is_kept(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let (old, recent) = (workflow(), workflow());
    let first = tasks_in(&f, old, &[Completed]);
    let early = task_in(s, recent, "early", Completed, 1);
    let last_change = f.tick();
    let late = task_in(s, recent, "late", Completed, 1);
    assert_eq!(late.updated_at, last_change);
    assert!(first[0].updated_at < last_change && early.updated_at < last_change);
    let (old_before, recent_before) = (snapshot(&f, old), snapshot(&f, recent));
    f.tick();

    // Nothing finished before the first change.
    assert_eq!(
        s.prune_finished(early.completed_at.unwrap(), 100, None)
            .unwrap(),
        Pruned::default()
    );
    // A cut-off equal to the last change keeps the workflow, although its first task finished
    // before it (and is scanned). The batch scans the two tasks that finished before it, not
    // the one that finished at it: not a full batch of three.
    assert_eq!(
        s.prune_finished(last_change, 3, None).unwrap(),
        removed(&[&old_before], None)
    );
    assert_gone(&f, &old_before);
    assert_kept(&f, &recent_before);
    // Times are cut to microseconds, the precision both backends keep: 999 ns after the last
    // change is still the last change's microsecond.
    assert_eq!(
        s.prune_finished(last_change + TimeDelta::nanoseconds(999), 100, None)
            .unwrap(),
        Pruned::default()
    );
    assert_kept(&f, &recent_before);
    // One microsecond later it goes.
    assert_eq!(
        s.prune_finished(last_change + TimeDelta::microseconds(1), 100, None)
            .unwrap(),
        removed(&[&recent_before], None)
    );
    assert_gone(&f, &recent_before);
}

fn failed_abandoned_and_skipped_tasks_are_finished(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    // Abandoned by the sweep (cap 0) after its runner went quiet; first, as the only Ready task.
    let swept = workflow();
    let stale = task_in(s, swept, "stale", Ready, 1);
    let claims = s.claim_ready(Uuid::now_v7(), 10).unwrap();
    assert_eq!(claims.len(), 1);
    f.tick();
    let recovery = s.recover_stale_claims(f.now(), 0).unwrap();
    assert_eq!(recovery.abandoned.len(), 1);
    assert_eq!(recovery.abandoned[0].id, stale.id);
    assert!(recovery.abandoned[0].abandoned_at.is_some());
    // Failed from Ready and from Running, and on its last attempt.
    let failed = workflow();
    let from_ready = task_in(s, failed, "from-ready", Ready, 3);
    s.mark_failed(from_ready.id, "boom").unwrap();
    task_in(s, failed, "from-running", Failed, 3);
    task_in(s, failed, "exhausted", Failed, 1);
    // Abandoned by hand from NotStarted, Ready and Running.
    let abandoned = workflow();
    for (i, status) in [NotStarted, Ready, Running].into_iter().enumerate() {
        let task = task_in(s, abandoned, &format!("abandoned-{i}"), status, 1);
        let row = s.mark_abandoned(task.id, "gave up").unwrap();
        assert_eq!((row.status, row.abandoned_at.is_some()), (Failed, true));
    }
    // Skipped from NotStarted and from Ready.
    let skipped = workflow();
    task_in(s, skipped, "from-not-started", Skipped, 1);
    let ready = task_in(s, skipped, "from-ready", Ready, 1);
    s.mark_skipped(ready.id, "not needed").unwrap();
    let all: Vec<Snapshot> = [swept, failed, abandoned, skipped]
        .into_iter()
        .map(|wf| snapshot(&f, wf))
        .collect();
    assert_eq!(
        all.iter().map(|s| s.tasks.len()).collect::<Vec<_>>(),
        [1, 3, 3, 2]
    );
    assert!(
        all.iter()
            .flat_map(|s| &s.tasks)
            .all(|t| t.status.is_terminal() && t.completed_at.is_some())
    );
    let older_than = f.tick();
    let refs: Vec<&Snapshot> = all.iter().collect();
    let pruned = s.prune_finished(older_than, 100, None).unwrap();
    assert_eq!(pruned, removed(&refs, None));
    assert_eq!(pruned.tasks, 9);
    for snapshot in &all {
        assert_gone(&f, snapshot);
    }
    assert_eq!(s.count_by_status().unwrap(), StatusCounts::default());
}

fn a_pass_in_small_batches_removes_everything_eligible(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let (busy, e1, e2, e3, late) = (workflow(), workflow(), workflow(), workflow(), workflow());
    // Each finishes at a time of its own, in this order: b1 b2 b3 e1a e2a e1b e3a, then, after
    // the cut-off, late.
    let running = task_in(s, busy, "running", Running, 1);
    let finish = |wf: Uuid, name: &str| {
        f.tick();
        task_in(s, wf, name, Completed, 1)
    };
    let b = [finish(busy, "b1"), finish(busy, "b2"), finish(busy, "b3")];
    let e1a = finish(e1, "a");
    let e2a = finish(e2, "a");
    let e1b = finish(e1, "b");
    let e3a = finish(e3, "a");
    assert!(e1a.completed_at < e2a.completed_at && e2a.completed_at < e1b.completed_at);
    let older_than = f.tick();
    finish(late, "a");
    let busy_before = snapshot(&f, busy);
    let late_before = snapshot(&f, late);
    let [e1_before, e2_before, e3_before] = [e1, e2, e3].map(|wf| snapshot(&f, wf));

    // The first batch scans only the busy workflow's tasks: nothing removed, and the next
    // batch starts after them.
    let first = s.prune_finished(older_than, 2, None).unwrap();
    assert_eq!(first, removed(&[], Some(cursor(&b[1]))));
    // The second scans b3 and e1a, and removes e1 with e1b, which it did not scan.
    let second = s.prune_finished(older_than, 2, first.next).unwrap();
    assert_eq!(second, removed(&[&e1_before], Some(cursor(&e1a))));
    assert_gone(&f, &e1_before);
    // The third scans e2a and e3a (e1b is gone).
    let third = s.prune_finished(older_than, 2, second.next).unwrap();
    assert_eq!(
        third,
        removed(&[&e2_before, &e3_before], Some(cursor(&e3a)))
    );
    // The fourth scans nothing (late finished after the cut-off): the pass is over.
    let fourth = s.prune_finished(older_than, 2, third.next).unwrap();
    assert_eq!(fourth, Pruned::default());
    for snapshot in [&e2_before, &e3_before] {
        assert_gone(&f, snapshot);
    }
    assert_kept(&f, &busy_before);
    assert_kept(&f, &late_before);

    // A second pass, once busy has finished and everything is old: batches of one.
    s.mark_completed(running.id).unwrap();
    let busy_done = snapshot(&f, busy);
    let older_than = f.tick();
    let mut batches = Vec::new();
    let mut after = None;
    loop {
        let pruned = s.prune_finished(older_than, 1, after).unwrap();
        after = pruned.next;
        batches.push(pruned);
        if after.is_none() || batches.len() > 10 {
            break;
        }
    }
    // b1 removes busy whole; late's task is next; then one empty batch ends the pass.
    let late_task = &late_before.tasks[0];
    assert_eq!(
        batches,
        vec![
            removed(&[&busy_done], Some(cursor(&b[0]))),
            removed(&[&late_before], Some(cursor(late_task))),
            Pruned::default(),
        ]
    );
    assert_gone(&f, &busy_done);
    assert_gone(&f, &late_before);
    assert_eq!(s.count_by_status().unwrap(), StatusCounts::default());
}

fn tasks_finished_in_the_same_microsecond_are_paged_by_id(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wfs = [workflow(), workflow(), workflow()];
    // Task ids increase in input order: the tasks of wfs[2], wfs[0], wfs[1].
    let news: Vec<NewTaskExecution> = [2, 0, 1]
        .iter()
        .map(|&i| NewTaskExecution::new(wfs[i], "only").with_status(Ready))
        .collect();
    let created = s.create_many(&news).unwrap();
    assert!(created.windows(2).all(|w| w[0].id < w[1].id));
    let claims = s.claim_ready(Uuid::now_v7(), 3).unwrap();
    let leases: Vec<dal_core::Lease> = claims.iter().map(|c| c.lease).collect();
    let done = s.complete_many(&leases).unwrap().completed;
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|t| t.completed_at == done[0].completed_at));
    let order = [wfs[2], wfs[0], wfs[1]];
    let before: Vec<Snapshot> = order.iter().map(|wf| snapshot(&f, *wf)).collect();
    let older_than = f.tick();

    let mut after = None;
    for (i, gone) in before.iter().enumerate() {
        let pruned = s.prune_finished(older_than, 1, after).unwrap();
        assert_eq!(
            pruned,
            removed(&[gone], Some(cursor(&gone.tasks[0]))),
            "batch {i}"
        );
        assert_gone(&f, gone);
        for kept in &before[i + 1..] {
            assert_kept(&f, kept);
        }
        after = pruned.next;
    }
    assert_eq!(
        s.prune_finished(older_than, 1, after).unwrap(),
        Pruned::default()
    );
}

fn a_workflow_reset_or_retried_after_finishing_is_kept(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    // Reset by hand after completing, failing and being skipped; retried after failing.
    let mut again = Vec::new();
    let mut wfs = Vec::new();
    for status in [Completed, Failed, Skipped] {
        let wf = workflow();
        tasks_in(&f, wf, &[Completed, status]);
        let task = task_in(s, wf, "reset", status, 3);
        f.tick();
        let row = s.reset_retry_state(task.id).unwrap();
        assert_eq!((row.status, row.completed_at), (Ready, None));
        again.push(task.id);
        wfs.push(wf);
    }
    let retried_wf = workflow();
    tasks_in(&f, retried_wf, &[Completed]);
    let failed = task_in(s, retried_wf, "retried", Failed, 3);
    let row = s.schedule_retry(failed.id, f.now()).unwrap();
    assert_eq!(
        (row.status, row.completed_at, row.attempt),
        (Ready, None, 2)
    );
    again.push(failed.id);
    wfs.push(retried_wf);
    let before: Vec<Snapshot> = wfs.iter().map(|wf| snapshot(&f, *wf)).collect();
    let older_than = f.tick();

    // Their other tasks are finished and old; the reset ones are Ready.
    assert_eq!(
        s.prune_finished(older_than, 100, None).unwrap(),
        Pruned::default()
    );
    for snapshot in &before {
        assert_kept(&f, snapshot);
    }
    // Run again and finished, they go once their last change is old.
    for id in &again {
        s.mark_running(*id).unwrap();
        s.mark_completed(*id).unwrap();
    }
    let finished: Vec<Snapshot> = wfs.iter().map(|wf| snapshot(&f, *wf)).collect();
    assert_eq!(
        s.prune_finished(older_than, 100, None).unwrap(),
        Pruned::default()
    );
    let older_than = f.tick();
    let refs: Vec<&Snapshot> = finished.iter().collect();
    assert_eq!(
        s.prune_finished(older_than, 100, None).unwrap(),
        removed(&refs, None)
    );
    for snapshot in &finished {
        assert_gone(&f, snapshot);
    }
}

fn a_task_reset_while_the_batch_waits_for_its_lock_keeps_its_workflow(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let (reset, eligible) = (workflow(), workflow());
    let tasks = tasks_in(&f, reset, &[Completed, Completed, Skipped]);
    tasks_in(&f, eligible, &[Completed, Failed]);
    let eligible_before = snapshot(&f, eligible);
    let reset_before = snapshot(&f, reset);
    let target = &tasks[1];
    let older_than = f.tick();
    let begun = f.begins();

    // Another connection locks the task (PostgreSQL: its row; SQLite: the database) ...
    let mut held = f.hold_lock_on(target.id);
    let pruned = thread::scope(|scope| {
        let batch = scope.spawn(|| s.prune_finished(older_than, 100, None));
        // ... waits until the batch waits for it ...
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let waiting = f.waits_for(&mut *held, begun);
            if waiting {
                break;
            }
            assert!(
                !batch.is_finished(),
                "the batch did not wait for the lock: {:?}",
                batch.join()
            );
            assert!(Instant::now() < deadline, "the batch never waited");
            thread::yield_now();
        }
        // ... and resets the task, and commits.
        let reset_sql = format!(
            "UPDATE task_executions SET status = 'ready', completed_at = NULL WHERE id = {}",
            kind.id_literal(target.id)
        );
        assert_eq!(held.execute(&reset_sql).expect("reset the task"), 1);
        held.commit().expect("COMMIT");
        batch.join().expect("the batch")
    });
    drop(held);

    // The batch saw the task as it is now: its workflow stays, whole; the other goes.
    assert_eq!(pruned.unwrap(), removed(&[&eligible_before], None));
    assert_gone(&f, &eligible_before);
    let mut expected = reset_before.clone();
    for task in &mut expected.tasks {
        if task.id == target.id {
            task.status = Ready;
            task.completed_at = None;
        }
    }
    assert_ne!(expected, reset_before);
    assert_kept(&f, &expected);
}

/// The arguments of a `prune_finished` call: `older_than`, `limit`, `after`.
type Call = (DateTime<Utc>, u32, Option<PruneCursor>);

fn rejected_input_sends_nothing_and_changes_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let (done, busy) = (workflow(), workflow());
    tasks_in(&f, done, &[Completed, Skipped]);
    tasks_in(&f, busy, &[Failed, Ready]);
    let before = [snapshot(&f, done), snapshot(&f, busy)];
    let older_than = f.tick();
    let out_of_range = |value: i64| Problem::OutOfRange {
        min: 1,
        max: i64::from(MAX_PRUNE_BATCH),
        value,
    };
    let too_early = validate::earliest_time() - TimeDelta::microseconds(1);
    let latest: DateTime<Utc> = "9999-12-31T23:59:59.999999Z".parse().unwrap();
    let too_late = latest + TimeDelta::microseconds(1);
    let valid_cursor = PruneCursor {
        completed_at: older_than,
        task_id: Uuid::nil(),
    };
    let bad_cursor = |completed_at| PruneCursor {
        completed_at,
        task_id: Uuid::nil(),
    };
    // (older_than, limit, after), and the field and problem of the refusal.
    let bad_limit =
        |limit, after, value| ((older_than, limit, after), "limit", out_of_range(value));
    let bad_time = |call, field| (call, field, Problem::TimeOutOfRange);
    let rejected: Vec<(Call, &str, Problem)> = vec![
        bad_limit(0, None, 0),
        bad_limit(MAX_PRUNE_BATCH + 1, None, i64::from(MAX_PRUNE_BATCH) + 1),
        bad_limit(0, Some(valid_cursor), 0),
        bad_time((too_early, 1, None), "older_than"),
        bad_time((too_late, 1, None), "older_than"),
        bad_time((DateTime::<Utc>::MIN_UTC, 1, None), "older_than"),
        bad_time(
            (DateTime::<Utc>::MAX_UTC, MAX_PRUNE_BATCH, None),
            "older_than",
        ),
        bad_time(
            (older_than, 1, Some(bad_cursor(too_early))),
            "after.completed_at",
        ),
        bad_time(
            (older_than, 1, Some(bad_cursor(too_late))),
            "after.completed_at",
        ),
    ];
    for ((at, limit, after), field, problem) in rejected {
        let (result, counts) = f.log.measure(|| s.prune_finished(at, limit, after));
        match expect_err(result) {
            DalError::Validation(v) => {
                assert_eq!(
                    (v.field.as_str(), &v.problem),
                    (field, &problem),
                    "{at} {limit} {after:?}"
                );
            }
            other => panic!("{at} {limit} {after:?}: {other:?}"),
        }
        assert_eq!(counts.statements, 0, "{at} {limit} {after:?}: {counts:?}");
    }
    for snapshot in &before {
        assert_kept(&f, snapshot);
    }
    // The edges of the range are accepted: the earliest and latest times, limits 1 and the
    // maximum.
    assert_eq!(
        s.prune_finished(validate::earliest_time(), MAX_PRUNE_BATCH, None)
            .unwrap(),
        Pruned::default()
    );
    assert_eq!(
        s.prune_finished(older_than, 1, Some(bad_cursor(latest)))
            .unwrap(),
        Pruned::default()
    );
    for snapshot in &before {
        assert_kept(&f, snapshot);
    }
    assert_eq!(
        s.prune_finished(latest, MAX_PRUNE_BATCH, None).unwrap(),
        removed(&[&before[0]], None)
    );
    assert_gone(&f, &before[0]);
    assert_kept(&f, &before[1]);
}

fn a_limit_beyond_i32_is_reported_as_given(kind: Backend) {
    let f = Fixture::new(kind);
    for limit in [i32::MAX as u32, i32::MAX as u32 + 1, u32::MAX] {
        let (result, counts) = f
            .log
            .measure(|| f.store.prune_finished(f.now(), limit, None));
        match expect_err(result) {
            DalError::Validation(v) => assert_eq!(
                (v.field.as_str(), v.problem),
                (
                    "limit",
                    Problem::OutOfRange {
                        min: 1,
                        max: i64::from(MAX_PRUNE_BATCH),
                        value: i64::from(limit),
                    }
                ),
                "limit {limit}"
            ),
            other => panic!("limit {limit}: {other:?}"),
        }
        assert_eq!(counts.statements, 0);
    }
}

fn a_batch_keeps_its_statements_prepared(kind: Backend) {
    // One connection: its first batch is the store's first.
    let f = Fixture::with(
        kind,
        Setup {
            pool_size: 1,
            ..Setup::default()
        },
    );
    let s = f.store();
    let batch = || {
        let wf = workflow();
        tasks_in(&f, wf, &[Completed, Skipped]);
        let older_than = f.tick();
        let (pruned, counts) = f
            .log
            .measure(|| s.prune_finished(older_than, MAX_PRUNE_BATCH, None).unwrap());
        assert_eq!((pruned.workflows, pruned.tasks), (vec![wf], 2));
        counts
    };
    let (cold, warm) = (batch(), batch());
    // PostgreSQL plans each batch anew (`Unprepared`), so it prepares nothing. SQLite keeps the
    // four statements of a batch prepared (`PreparedAs`): the scan, the check and the two
    // DELETEs, prepared on the first batch and never again.
    let prepared = kind.prepared_per_prune_batch();
    assert_eq!(cold.statements, warm.statements);
    assert_eq!(cold.prepares, prepared, "{kind}: {:#?}", cold.sql);
    assert_eq!(warm.prepares, 0, "{kind}: {:#?}", warm.sql);
}

fn add_count(counts: &mut StatusCounts, status: TaskStatus) {
    *match status {
        TaskStatus::NotStarted => &mut counts.not_started,
        TaskStatus::Ready => &mut counts.ready,
        TaskStatus::Running => &mut counts.running,
        TaskStatus::Completed => &mut counts.completed,
        TaskStatus::Failed => &mut counts.failed,
        TaskStatus::Skipped => &mut counts.skipped,
    } += 1;
}
