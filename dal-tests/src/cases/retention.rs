//! Retention: `prune_finished` removes finished workflow executions, whole, in bounded batches;
//! each batch's whole answer is checked, and every read of what it removed and of what it kept.

use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::store::MAX_PRUNE_BATCH as MAX;
use dal_core::{ExecutionEvent, NewTaskExecution, Problem, PruneCursor, Pruned};
use dal_core::{TaskExecution, TaskStatus::*, Transition as T, validate};
use uuid::Uuid;

use super::model_based::{Op::*, scenario, spec};
use super::support::{expect_err, task_in, workflow};
use crate::case;
use crate::model::Failure;
use crate::suite::{Backend, Case, Fixture};

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(a_batch_removes_exactly_the_workflows_finished_before_the_cut_off),
    case!(a_pass_in_batches_goes_by_completion_time_then_id),
    case!(a_task_reset_while_the_batch_waits_for_its_lock_keeps_its_workflow),
];

/// A workflow execution as the reads show it: its rows and its history.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    wf: Uuid,
    tasks: Vec<TaskExecution>,
    events: Vec<ExecutionEvent>,
}

fn snapshot(f: &Fixture, wf: Uuid) -> Snapshot {
    let tasks = f.store.list_for_workflow(wf).unwrap();
    let events = f.store.events_for_workflow(wf, None, u32::MAX).unwrap();
    Snapshot { wf, tasks, events }
}

/// Every read shows `kept` as it was and nothing of `gone`; the counts are `kept`'s (all there is).
fn assert_state(f: &Fixture, kept: &[&Snapshot], gone: &[&Snapshot]) {
    let s = f.store();
    for before in kept {
        assert_eq!(snapshot(f, before.wf), **before);
        for task in &before.tasks {
            let own = |e: &&ExecutionEvent| e.task_execution_id == task.id;
            let events = s.events_for_task(task.id).unwrap();
            assert!(before.events.iter().filter(own).eq(&events));
            assert_eq!(&s.get(task.id).unwrap(), task);
        }
    }
    for before in gone {
        assert!(!before.tasks.is_empty(), "nothing to check");
        assert_eq!(s.list_for_workflow(before.wf).unwrap(), []);
        assert_eq!(s.events_for_workflow(before.wf, None, 100).unwrap(), []);
        for task in &before.tasks {
            let err = expect_err(s.get(task.id));
            assert_eq!(Failure::from(err), Failure::NotFound(task.id));
            assert_eq!(s.events_for_task(task.id).unwrap(), []);
        }
    }
    let counts = s.count_by_status().unwrap();
    for status in dal_core::TaskStatus::ALL {
        let tasks = kept.iter().flat_map(|s| &s.tasks);
        let n = tasks.filter(|t| t.status == status).count();
        assert_eq!(counts.get(status), n as i64, "{status}");
    }
}

/// What a batch that removed `gone` (and nothing else) reports.
fn removed(gone: &[&Snapshot], next: Option<PruneCursor>) -> Pruned {
    let mut workflows: Vec<Uuid> = gone.iter().map(|s| s.wf).collect();
    workflows.sort_unstable();
    let tasks = gone.iter().map(|s| s.tasks.len() as u64).sum();
    let events = gone.iter().map(|s| s.events.len() as u64).sum();
    Pruned { workflows, tasks, events, next }
}

/// The cursor at the finished task `task`; [`at`] a time and id.
fn cursor(task: &TaskExecution) -> Option<PruneCursor> {
    at(task.completed_at.unwrap(), task.id)
}

fn at(completed_at: DateTime<Utc>, task_id: Uuid) -> Option<PruneCursor> {
    Some(PruneCursor { completed_at, task_id })
}

/// A pass in batches of `limit`: every batch's answer, up to the one without a next.
fn pass(f: &Fixture, older_than: DateTime<Utc>, limit: u32) -> Vec<Pruned> {
    let batch = |after| f.store.prune_finished(older_than, limit, after).unwrap();
    let next = |b: &Pruned| b.next.map(|after| batch(Some(after)));
    std::iter::successors(Some(batch(None)), next).take(50).collect()
}

/// Finished in every way and old: removed whole, names freed; one task unfinished (or reset, or
/// retried) or a change at the cut-off (to the microsecond): kept whole. Bad input sends nothing.
fn a_batch_removes_exactly_the_workflows_finished_before_the_cut_off(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let prune = |older_than, limit, after| s.prune_finished(older_than, limit, after).unwrap();
    let (done, claimed, nothing) = (workflow(), workflow(), Pruned::default());
    // Abandoned by the sweep (cap 0), claimed as the only Ready task; then another claimed alone.
    let stale = task_in(s, done, "stale", Ready, 1);
    s.claim_ready(Uuid::now_v7(), 10).unwrap();
    f.tick();
    let swept = s.recover_stale_claims(f.now(), 0).unwrap().abandoned;
    assert_eq!((swept.len(), swept[0].id), (1, stale.id));
    let waiting = task_in(s, claimed, "claimed", Ready, 1);
    let lease = s.claim_ready(Uuid::now_v7(), 10).unwrap()[0].lease;
    assert_eq!(lease.task_id, waiting.id);
    task_in(s, claimed, "finished", Completed, 1);
    // Failed, retried, then completed: seven events.
    let retried = task_in(s, done, "retried", Failed, 3);
    s.schedule_retry(retried.id, f.now()).unwrap();
    s.mark_running(retried.id).unwrap();
    s.mark_completed(retried.id).unwrap();
    let fail = T::MarkFailed { error: "e".into() };
    let abandon = T::MarkAbandoned { reason: "r".into() };
    let skip = T::MarkSkipped { reason: "r".into() };
    for (status, finish, max_attempts) in [
        (Ready, &fail, 3),
        (Running, &fail, 3),
        (Running, &fail, 1),
        (NotStarted, &abandon, 1),
        (Ready, &abandon, 1),
        (Running, &abandon, 1),
        (NotStarted, &skip, 1),
        (Ready, &skip, 1),
        (Running, &T::MarkCompleted, 1),
    ] {
        let name = format!("{status} {finish:?} {max_attempts}");
        let task = task_in(s, done, &name, status, max_attempts);
        let row = s.transition(task.id, finish.clone()).unwrap();
        assert!(row.status.is_terminal() && row.completed_at.is_some());
    }
    // One task unfinished beside a finished one: as created, or reset, or (the last) retried.
    let mut open = Vec::new();
    for status in [NotStarted, Ready, Running, Completed, Skipped, Failed, Failed] {
        let wf = workflow();
        task_in(s, wf, "finished", Completed, 1);
        f.tick();
        let mut row = task_in(s, wf, "open", status, 3);
        if open.len() == 6 {
            row = s.schedule_retry(row.id, f.now()).unwrap();
        } else if row.status.is_terminal() {
            row = s.reset_retry_state(row.id).unwrap();
        }
        assert!(!row.status.is_terminal() && row.completed_at.is_none());
        open.push((wf, row.id));
    }
    let older_than = f.tick();
    let late = workflow();
    task_in(s, late, "late", Completed, 1); // at the cut-off
    let mut wfs = vec![done, late, claimed];
    wfs.extend(open.iter().map(|(wf, _)| *wf));
    let before: Vec<Snapshot> = wfs.iter().map(|wf| snapshot(&f, *wf)).collect();
    let (gone, kept) = (&before[0], before[1..].iter().collect::<Vec<_>>());
    let events = if f.keeps_history() { 40 } else { 0 };
    assert_eq!((gone.tasks.len(), gone.events.len()), (11, events));
    let refused = |older_than, limit, after, field: &str, problem| {
        let (result, counts) = f.log.measure(|| s.prune_finished(older_than, limit, after));
        let failure = Failure::from(expect_err(result));
        assert_eq!(failure, Failure::Validation(field.into(), problem));
        assert_eq!(counts.statements, 0, "{field}");
    };
    for (limit, after) in [
        (0, None),
        (MAX + 1, None),
        (0, at(older_than, Uuid::nil())),
        (i32::MAX as u32, None),
        (i32::MAX as u32 + 1, None),
        (u32::MAX, None),
    ] {
        let (max, value) = (MAX.into(), limit.into());
        let problem = Problem::OutOfRange { min: 1, max, value };
        refused(older_than, limit, after, "limit", problem);
    }
    let earliest = validate::earliest_time();
    let latest: DateTime<Utc> = "9999-12-31T23:59:59.999999Z".parse().unwrap();
    let (tiny, nil) = (TimeDelta::microseconds(1), Uuid::nil());
    let (too_early, too_late) = (earliest - tiny, latest + tiny);
    for (cut_off, limit, after, field) in [
        (too_early, 1, None, "older_than"),
        (too_late, 1, None, "older_than"),
        (DateTime::<Utc>::MIN_UTC, 1, None, "older_than"),
        (DateTime::<Utc>::MAX_UTC, MAX, None, "older_than"),
        (older_than, 1, at(too_early, nil), "after.completed_at"),
        (older_than, 1, at(too_late, nil), "after.completed_at"),
    ] {
        refused(cut_off, limit, after, field, Problem::TimeOutOfRange);
    }
    assert_eq!(prune(earliest, MAX, None), nothing);
    assert_eq!(prune(older_than, 1, at(latest, nil)), nothing);
    assert_state(&f, &before.iter().collect::<Vec<_>>(), &[]);
    assert_eq!(prune(older_than, MAX, None), removed(&[gone], None));
    assert_state(&f, &kept, &[gone]);
    assert_eq!(prune(older_than, 100, None), nothing);
    // In batches of one: each scans one old finished task of the others, and removes nothing.
    let old = |t: &&TaskExecution| t.completed_at.is_some_and(|at| at < older_than);
    let mut scanned: Vec<_> = kept.iter().flat_map(|s| &s.tasks).filter(old).collect();
    scanned.sort_by_key(|t| (t.completed_at, t.id));
    let batches = scanned.iter().map(|t| removed(&[], cursor(t)));
    let batches: Vec<_> = batches.chain([nothing.clone()]).collect();
    assert_eq!(pass(&f, older_than, 1), batches);
    assert_state(&f, &kept, &[]);
    // Finished at the cut-off, as late: kept (not scanned: the batch is not full), and 999 ns on
    // (the same microsecond); one microsecond on, they go.
    s.complete(&lease).unwrap();
    for (_, id) in &open {
        s.mark_abandoned(*id, "gave up").unwrap();
    }
    assert_eq!(f.now(), older_than);
    let after: Vec<Snapshot> = wfs[1..].iter().map(|wf| snapshot(&f, *wf)).collect();
    let after: Vec<&Snapshot> = after.iter().collect();
    assert_eq!(prune(older_than, scanned.len() as u32 + 1, None), nothing);
    let within = older_than + TimeDelta::nanoseconds(999);
    assert_eq!(prune(within, 100, None), nothing);
    assert_state(&f, &after, &[]);
    assert_eq!(prune(older_than + tiny, 100, None), removed(&after, None));
    assert_state(&f, &[], &after);
    assert_eq!(prune(latest, MAX, None), nothing);
    // The names are free again.
    let again = s.create(&NewTaskExecution::new(done, "retried")).unwrap();
    assert_eq!(s.list_for_workflow(done).unwrap(), vec![again]);
}

/// Batches scan by completion time, then id, from the cursor; a workflow goes with its first
/// task scanned, one with a task unfinished or finished after the cut-off stays. A second pass,
/// once the unfinished task has finished, in batches of one. (Tasks finished in one
/// microsecond: the model's found sequences.)
fn a_pass_in_batches_goes_by_completion_time_then_id(kind: Backend) {
    // Running t0 of wf 0; then b1 b2 b3 (wf 0), e1a (wf 1), e2a (wf 2), e1b (wf 1) finish a
    // second apart, then the cut-off, then e2-late (wf 2).
    let wfs = [0, 0, 0, 1, 2, 1, 2];
    let names = [1, 2, 3, 0, 0, 1, 1];
    let news = wfs.iter().zip(names).map(|(&wf, name)| spec(wf, name, true, 1)).collect();
    let mut ops = vec![Create(spec(0, 0, true, 1)), Transition(0, 2, 0, 0), CreateMany(news)];
    for task in 1..7 {
        ops.extend([Advance(1), Transition(task, 2, 0, 0), Transition(task, 3, 0, 0)]);
    }
    ops.extend([Advance(1), Advance(1), Transition(7, 1, 1, 0)]);
    ops.extend([Prune(1, 2, false), Prune(1, 2, true), Prune(1, 2, true), Prune(1, 2, true)]);
    ops.extend([Transition(0, 3, 0, 0), Advance(1), Prune(0, 1, false)]);
    scenario(kind, &[ops, vec![Prune(0, 1, true), Prune(0, 1, true), Prune(0, 1, true)]].concat());
}

/// A batch that waits for a task's lock sees it as the holder left it: reset, so its workflow stays.
fn a_task_reset_while_the_batch_waits_for_its_lock_keeps_its_workflow(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let (reset, eligible) = (workflow(), workflow());
    let target = task_in(s, reset, "target", Completed, 1);
    task_in(s, reset, "other", Skipped, 1);
    task_in(s, eligible, "done", Failed, 1);
    let [reset_s, eligible_s] = [reset, eligible].map(|wf| snapshot(&f, wf));
    let older_than = f.tick();
    let begun = f.begins();
    // Another connection locks the task (PostgreSQL: its row; SQLite: the database) ...
    let mut held = f.hold_lock_on(target.id);
    let pruned = thread::scope(|scope| {
        let batch = scope.spawn(|| s.prune_finished(older_than, 100, None));
        // ... waits until the batch waits for it ...
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f.waits_for(&mut *held, begun) {
            assert!(!batch.is_finished(), "the batch did not wait");
            assert!(Instant::now() < deadline, "the batch never waited");
            thread::yield_now();
        }
        // ... and resets the task, and commits.
        let id = kind.id_literal(target.id);
        let set = "status = 'ready', completed_at = NULL";
        let sql = format!("UPDATE task_executions SET {set} WHERE id = {id}");
        assert_eq!(held.execute(&sql), Ok(1));
        held.commit().unwrap();
        batch.join().unwrap()
    });
    drop(held);
    assert_eq!(pruned.unwrap(), removed(&[&eligible_s], None));
    let mut expected = reset_s.clone();
    expected.tasks[0] = TaskExecution { status: Ready, completed_at: None, ..target };
    assert_state(&f, &[&expected], &[&eligible_s]);
}
