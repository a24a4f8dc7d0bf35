//! Retention: `prune_finished` removes finished workflow executions whole, in bounded batches;
//! every answer checked, and every read of what went and what stayed.

use super::model_based::{Op::*, scenario, spec};
use super::support::{fails, invalid, task_in, workflow};
use crate::case;
use crate::model::Failure;
use crate::suite::{Backend, Case, Fixture};
use chrono::{DateTime, TimeDelta, Utc};
use dal_core::store::MAX_PRUNE_BATCH as MAX;
use dal_core::{ExecutionEvent, Problem, PruneCursor, Pruned};
use dal_core::{TaskExecution, TaskStatus::*, validate};
use std::thread;
use std::time::{Duration, Instant};
use uuid::Uuid;

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
            assert_eq!(fails(s.get(task.id)), Failure::NotFound(task.id));
            assert_eq!(s.events_for_task(task.id).unwrap(), []);
        }
    }
    let counts = s.count_by_status().unwrap();
    for status in dal_core::TaskStatus::ALL {
        let n = kept.iter().flat_map(|s| &s.tasks).filter(|t| t.status == status).count();
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

fn at(completed_at: DateTime<Utc>, task_id: Uuid) -> Option<PruneCursor> {
    Some(PruneCursor { completed_at, task_id })
}

/// Finished every way and old: removed whole, names freed; one task unfinished keeps its
/// workflow, and batches of one scan past it (model sequences). A change at the cut-off (to the
/// microsecond) keeps its workflow. Bad input sends nothing.
fn a_batch_removes_exactly_the_workflows_finished_before_the_cut_off(kind: Backend) {
    let t = |task, kinds: &[u8]| {
        kinds.iter().map(move |&k| Transition(task, k, 1, 0)).collect::<Vec<_>>()
    };
    let (one, three) = (|wf, name, ready| spec(wf, name, ready, 1), |name| spec(0, name, true, 3));
    // wf 0: t0 abandoned by the sweep (cap 0); t1 failed, retried, completed; t2 to t7 failed or
    // abandoned from each status they may. wf 1: skipped from NotStarted and Ready, completed.
    // wf 2: one claimed beside one finished.
    let mut ops = vec![Create(one(0, 0, true)), Claim(0, 1), Advance(60), Sweep(0, 0)];
    let news = [three(1), three(2), three(3), one(0, 4, true), one(0, 5, false), one(0, 6, true)];
    let more = [one(0, 7, true), one(1, 0, false), one(1, 1, true), one(1, 2, true)];
    ops.push(CreateMany([&news[..], &more, &[one(2, 0, true), one(2, 1, true)]].concat()));
    #[rustfmt::skip]
    let chains: [(usize, &[u8]); 11] = [
        (1, &[2, 4, 6, 2, 3]), (2, &[4]), (3, &[2, 4]), (4, &[2, 4]), (5, &[5]), (6, &[5]),
        (7, &[2, 5]), (8, &[1]), (9, &[1]), (10, &[2, 3]), (12, &[2, 3]),
    ];
    ops.extend(chains.into_iter().flat_map(|(task, kinds)| t(task, kinds)));
    ops.extend([Claim(1, 1), Advance(1), Prune(0, MAX, false), Prune(0, 100, false)]);
    ops.extend([Prune(0, 1, false), Prune(0, 1, true), Prune(0, 1, true), Prune(0, 1, true)]);
    scenario(kind, &[ops, vec![Create(one(0, 1, true)), Create(one(1, 0, true))]].concat());
    for open in [&[][..], &[0], &[0, 2], &[0, 2, 3, 8], &[1, 8], &[0, 2, 4, 8], &[0, 2, 4, 6]] {
        let news = vec![one(0, 0, true), spec(0, 1, false, 3), one(1, 0, true)];
        let mut ops = vec![CreateMany(news), Transition(0, 1, 1, 0), Transition(2, 1, 1, 0)];
        ops.extend(t(1, open));
        ops.extend([Advance(1), Prune(0, 100, false), Prune(0, 1, false), Prune(0, 1, true)]);
        scenario(kind, &ops);
    }
    let f = Fixture::new(kind);
    let s = f.store();
    let prune = |older_than, limit, after| s.prune_finished(older_than, limit, after).unwrap();
    let (done, late, nothing) = (workflow(), workflow(), Pruned::default());
    task_in(s, done, "done", Completed, 1);
    let older_than = f.tick();
    task_in(s, late, "late", Completed, 1); // at the cut-off
    let [gone, kept] = [done, late].map(|wf| snapshot(&f, wf));
    let refused = |older_than, limit, after, field: &str, problem| {
        invalid(&f, field, problem, || s.prune_finished(older_than, limit, after));
    };
    let (i32_max, after) = (i32::MAX as u32, at(older_than, Uuid::nil()));
    for (limit, after) in [(0, None), (MAX + 1, None), (0, after), (i32_max, None)] {
        let problem = Problem::OutOfRange { min: 1, max: MAX.into(), value: limit.into() };
        refused(older_than, limit, after, "limit", problem);
    }
    for limit in [i32_max + 1, u32::MAX] {
        let problem = Problem::OutOfRange { min: 1, max: MAX.into(), value: limit.into() };
        refused(older_than, limit, None, "limit", problem);
    }
    let earliest = validate::earliest_time();
    let latest: DateTime<Utc> = "9999-12-31T23:59:59.999999Z".parse().unwrap();
    let (tiny, nil) = (TimeDelta::microseconds(1), Uuid::nil());
    let (too_early, too_late) = (earliest - tiny, latest + tiny);
    #[rustfmt::skip]
    let times = [
        (too_early, 1, None, "older_than"), (too_late, 1, None, "older_than"),
        (DateTime::<Utc>::MIN_UTC, 1, None, "older_than"),
        (DateTime::<Utc>::MAX_UTC, MAX, None, "older_than"),
        (older_than, 1, at(too_early, nil), "after.completed_at"),
        (older_than, 1, at(too_late, nil), "after.completed_at"),
    ];
    for (cut_off, limit, after, field) in times {
        refused(cut_off, limit, after, field, Problem::TimeOutOfRange);
    }
    assert_eq!(prune(earliest, MAX, None), nothing);
    assert_eq!(prune(older_than, 1, at(latest, nil)), nothing);
    assert_state(&f, &[&gone, &kept], &[]);
    assert_eq!(prune(older_than, MAX, None), removed(&[&gone], None));
    let within = older_than + TimeDelta::nanoseconds(999);
    assert_eq!(prune(within, 100, None), nothing);
    assert_state(&f, &[&kept], &[&gone]);
    assert_eq!(prune(older_than + tiny, 100, None), removed(&[&kept], None));
    assert_state(&f, &[], &[&kept]);
    assert_eq!(prune(latest, MAX, None), nothing);
}

/// Batches scan by completion time, then id, from the cursor; a workflow goes with its first
/// task scanned unless one is unfinished or later; a second pass once all finished.
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
