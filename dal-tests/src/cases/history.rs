//! The execution history: one event per change, atomically with it, none for a rejected or
//! rolled-back call; the same events on every backend; none at all with the history off.

use std::cell::Cell;
use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::EventType::{self, *};
use dal_core::NewTaskExecution;
use dal_core::event::time_value;
use dal_core::{DalError, DatabaseErrorKind as Kind, ExecutionEvent, FailedTask, Finished};
use dal_core::{Problem, Recovery, SubStatus, TaskExecution, TaskStatus as S};
use serde_json::{Value, json};
use uuid::Uuid;

use super::support::{assert_unchanged, checked_history, expect_err, new_row, ready_tasks};
use super::support::{task_in, workflow};
use crate::case;
use crate::model::Failure as F;
use crate::suite::{Backend, Case, Fixture};

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(each_change_leaves_exactly_its_event_and_a_refused_call_none),
    case!(batches_of_every_size_log_each_event_in_task_order),
    case!(a_change_whose_event_cannot_be_written_is_rolled_back),
];

/// The cases of a store with the history off, in place of [`CASES`]: the same writes, no event.
pub const OFF: &[Case] = &[
    case!(each_change_leaves_exactly_its_event_and_a_refused_call_none),
    case!(batches_of_every_size_log_each_event_in_task_order),
];

/// An event as expected: task, type, data, runner, time (`seq` and `id` are checked apart).
type Event = (Uuid, EventType, Value, Option<Uuid>, DateTime<Utc>);

/// `events` are `want` (none with the history off), all of `wf`, `seq` increasing, each `id` a
/// distinct UUIDv7 of its event's millisecond.
fn assert_history(f: &Fixture, events: &[ExecutionEvent], wf: Uuid, want: &[Event]) {
    let want = if f.keeps_history() { want } else { &[] };
    let got: Vec<Event> = events
        .iter()
        .map(|e| {
            (e.task_execution_id, e.event_type, e.event_data.clone(), e.runner_id, e.created_at)
        })
        .collect();
    assert_eq!(got, want);
    let ids: HashSet<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), events.len(), "distinct ids");
    for (i, e) in events.iter().enumerate() {
        assert!(i == 0 || events[i - 1].seq < e.seq, "seq increases");
        let (secs, nanos) = e.id.get_timestamp().unwrap().to_unix();
        let millis = secs as i64 * 1_000 + i64::from(nanos / 1_000_000);
        let (at, version) = (e.created_at.timestamp_millis(), e.id.get_version_num());
        assert_eq!((e.workflow_execution_id, version, millis), (wf, 7, at));
    }
}

/// The error `result` failed with, as the model spells it.
fn refused<T: std::fmt::Debug>(result: Result<T, DalError>) -> F {
    expect_err(result).into()
}

/// Event data of one field.
fn with(key: &str, value: impl Into<Value>) -> Value {
    json!({ key: value.into() })
}

/// An event's data: the fields of `extra`, and the task's counters after the change.
fn data([attempt, claim, recovery_attempts]: [i32; 3], mut extra: Value) -> Value {
    extra["attempt"] = json!(attempt);
    extra["claim"] = json!(claim);
    extra["recovery_attempts"] = json!(recovery_attempts);
    extra
}

/// Every kind of change of a task leaves exactly its event; a refused call changes nothing and
/// leaves none; the history, interleaved with another workflow's, pages in order.
fn each_change_leaves_exactly_its_event_and_a_refused_call_none(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let (wf, other) = (workflow(), workflow());
    let new = |wf, name: &str| NewTaskExecution::new(wf, name).with_max_attempts(3);
    let id = s.create(&new(wf, "etl")).unwrap().id;
    let [a, b, c, d] = [(); 4].map(|_| Uuid::now_v7());
    let (due, later) = (f.now(), f.now() + TimeDelta::hours(1));
    let lease = Cell::new(None);
    let ok = |row: Result<TaskExecution, DalError>| drop(row.unwrap());
    let held = || lease.get().unwrap();
    let claim = |runner| lease.set(Some(s.claim_ready(runner, 1).unwrap()[0].lease));
    // A cycle of d: the lease held completed (or failed with `error`), `limit` tasks claimed.
    let cycle = |error: Option<&str>, limit| {
        let mut finished = Finished::default();
        match (lease.take(), error) {
            (Some(lease), Some(error)) => {
                let error = error.into();
                finished.failed.push(FailedTask { lease, error });
            }
            (Some(lease), None) => finished.completed.push(lease),
            (None, _) => {}
        }
        let claimed = s.finish_and_claim(d, &finished, limit).unwrap().claimed;
        lease.set(claimed.first().map(|c| c.lease));
    };
    // Each call at a time of its own, after a change of the other workflow's.
    let mut at = vec![f.now()];
    let mut step = |call: &dyn Fn()| {
        s.create(&new(other, &at.len().to_string())).unwrap();
        at.push(f.tick());
        call();
    };
    step(&|| ok(s.mark_ready(id)));
    step(&|| claim(a));
    let lost = held();
    ok(s.heartbeat(&lost)); // not history
    step(&|| ok(s.fail(&held(), "boom")));
    step(&|| ok(s.schedule_retry(id, due)));
    step(&|| claim(b));
    // b stops heart-beating: a minute later, its claim is stale.
    f.clock.advance(TimeDelta::minutes(1));
    let stale_before = f.now();
    let swept = || s.recover_stale_claims(stale_before, 3).unwrap().reset;
    step(&|| assert_eq!(swept().len(), 1));
    step(&|| claim(c));
    step(&|| ok(s.set_sub_status(id, Some(SubStatus::Deferred))));
    step(&|| ok(s.set_sub_status(id, None)));
    step(&|| ok(s.release(&lease.take().unwrap())));
    step(&|| ok(s.mark_running(id)));
    step(&|| ok(s.mark_failed(id, "e1")));
    step(&|| ok(s.schedule_retry(id, later)));
    step(&|| ok(s.reset_task_for_recovery(id)));
    step(&|| ok(s.mark_skipped(id, "not needed")));
    step(&|| ok(s.reset_retry_state(id)));
    step(&|| ok(s.mark_abandoned(id, "gave up")));
    step(&|| ok(s.reset_retry_state(id)));
    step(&|| cycle(None, 1));
    step(&|| ok(s.complete(&held())));
    step(&|| ok(s.reset_retry_state(id)));
    step(&|| cycle(None, 1));
    step(&|| cycle(None, 0));
    step(&|| ok(s.reset_retry_state(id)));
    step(&|| cycle(None, 1));
    step(&|| cycle(Some("bang"), 0));

    let row = s.get(id).unwrap();
    let exhausted = task_in(s, other, "exhausted", S::Failed, 1);
    f.tick();
    let got = vec![
        refused(s.mark_running(id)),
        refused(s.schedule_retry(exhausted.id, f.now())),
        refused(s.complete(&lost)),
        refused(s.heartbeat(&lost)),
        refused(s.mark_failed(id, "bad\0")),
        refused(s.create(&new(wf, "etl"))),
        refused(s.create_many(&[new(wf, "fresh"), new(wf, "etl")])),
    ];
    let taken = F::AlreadyExists(wf, "etl".into());
    let want = vec![
        F::InvalidTransition(id, S::Failed, S::Running),
        F::RetriesExhausted(exhausted.id, 1, 1),
        F::ClaimLost(id),
        F::ClaimLost(id),
        F::Validation("error".into(), Problem::ContainsNul),
        taken.clone(),
        taken,
    ];
    assert_eq!(got, want);
    let swept = s.recover_stale_claims(f.now(), 3).unwrap();
    assert_eq!(swept, Recovery::default());
    assert_unchanged(s, &row);
    let counters = (row.attempt, row.claim_count, row.recovery_attempts);
    assert_eq!((row.status, counters), (S::Failed, (1, 6, 2)));

    let (due, later, stale) = (time_value(due), time_value(later), time_value(stale_before));
    let want = [
        (Created, [1, 0, 0], None, json!({})),
        (Ready, [1, 0, 0], None, json!({})),
        (Claimed, [1, 1, 0], Some(a), json!({})),
        (Failed, [1, 1, 0], Some(a), with("error", "boom")),
        (RetryScheduled, [2, 1, 0], None, with("retry_at", due)),
        (Claimed, [2, 2, 0], Some(b), json!({})),
        (Recovered, [2, 2, 1], None, with("stale_before", stale)),
        (Claimed, [2, 3, 1], Some(c), json!({})),
        (Deferred, [2, 3, 1], None, with("sub_status", "deferred")),
        (Resumed, [2, 3, 1], None, with("sub_status", Value::Null)),
        (Released, [2, 3, 1], Some(c), json!({})),
        (Started, [2, 3, 1], None, json!({})),
        (Failed, [2, 3, 1], None, with("error", "e1")),
        (RetryScheduled, [3, 3, 1], None, with("retry_at", later)),
        (Recovered, [3, 3, 2], None, json!({})),
        (Skipped, [3, 3, 2], None, with("reason", "not needed")),
        (Reset, [1, 3, 2], None, json!({})),
        (Abandoned, [1, 3, 2], None, with("reason", "gave up")),
        (Reset, [1, 3, 2], None, json!({})),
        (Claimed, [1, 4, 2], Some(d), json!({})),
        (Completed, [1, 4, 2], Some(d), json!({})),
        (Reset, [1, 4, 2], None, json!({})),
        (Claimed, [1, 5, 2], Some(d), json!({})),
        (Completed, [1, 5, 2], Some(d), json!({})),
        (Reset, [1, 5, 2], None, json!({})),
        (Claimed, [1, 6, 2], Some(d), json!({})),
        (Failed, [1, 6, 2], Some(d), with("error", "bang")),
    ];
    assert_eq!(at.len(), want.len());
    let want: Vec<Event> = (want.into_iter().zip(at))
        .map(|((event, counters, runner, extra), at)| {
            (id, event, data(counters, extra), runner, at)
        })
        .collect();
    let all = s.events_for_workflow(wf, None, 100).unwrap();
    assert_history(&f, &all, wf, &want);
    assert_eq!(s.events_for_task(id).unwrap(), all);
    checked_history(&f, &row);
    for page_size in [1, 3, 7, 20, 100] {
        let (mut paged, mut after) = (Vec::new(), None);
        loop {
            let page = s.events_for_workflow(wf, after, page_size).unwrap();
            assert!(page.len() <= page_size as usize);
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            paged.extend(page);
        }
        assert_eq!(paged, all, "pages of {page_size}");
    }
    let after_last = all.last().map(|e| e.seq);
    assert_eq!(s.events_for_workflow(wf, after_last, 10).unwrap(), []);
    assert_eq!(s.events_for_workflow(wf, None, 0).unwrap(), []);
    assert_eq!(s.events_for_workflow(workflow(), None, 10).unwrap(), []);
    assert_eq!(s.events_for_task(Uuid::now_v7()).unwrap(), []);
}

/// Changes whose event the database refuses fail, rolled back whole; the others go through.
fn a_change_whose_event_cannot_be_written_is_rolled_back(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let running = task_in(s, wf, "running", S::Running, 1);
    ready_tasks(s, wf, 3, 1);
    let events = || s.events_for_workflow(wf, None, 99).unwrap();
    let state = || (s.list_for_workflow(wf).unwrap(), events());
    let before = state();
    for event_type in ["failed", "claimed", "created"] {
        f.execute_sql(&kind.refuse_events_sql(event_type));
    }
    f.tick();
    let new = |name: &str| NewTaskExecution::new(wf, name);
    for (err, event) in [
        (expect_err(s.mark_failed(running.id, "boom")), "failed"),
        (expect_err(s.claim_ready(Uuid::now_v7(), 10)), "claimed"),
        (expect_err(s.create(&new("new"))), "created"),
        (expect_err(s.create_many(&[new("x"), new("y")])), "created"),
    ] {
        // A CHECK's violation (PostgreSQL) or a trigger's abort (SQLite), naming the event.
        let kind = match &err {
            DalError::Database { kind, .. } => *kind,
            other => panic!("not a database error: {other:?}"),
        };
        let refused = matches!(kind, Kind::ConstraintViolation | Kind::Other);
        let named = err.to_string().replace('_', " ").contains(&format!("no {event}"));
        assert!(refused && named, "{err:?}");
    }
    assert_eq!(state(), before);
    let completed = s.mark_completed(running.id).unwrap();
    let events = checked_history(&f, &completed);
    assert_eq!(events.last().map(|e| e.event_type), Some(Completed));
}

/// Batches around SQLite's `INSERT` shapes (padded to powers of two up to 1,024 rows): rows as
/// given, one event each per create, claim and sweep, in task id order; the padding writes none.
fn batches_of_every_size_log_each_event_in_task_order(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let runner = Uuid::now_v7();
    let reason =
        "abandoned: its runner stopped heart-beating and the task was already recovered 0 times";
    let sizes = [2, 3, 31, 32, 33, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025];
    for n in sizes {
        let wf = workflow();
        let created = f.now();
        let tasks = ready_tasks(s, wf, n, 1);
        for (i, task) in tasks.iter().enumerate() {
            let row = new_row(task.id, wf, &format!("r{i:05}"), created);
            let want = TaskExecution { status: S::Ready, ..row };
            assert_eq!(task, &want);
        }
        let mut stored = s.list_for_workflow(wf).unwrap();
        stored.sort_unstable_by(|a, b| a.task_name.cmp(&b.task_name));
        assert_eq!(stored, tasks, "{n} tasks as stored");
        let claimed = f.tick();
        assert_eq!(s.claim_ready(runner, n as u32).unwrap().len(), n);
        f.clock.advance(TimeDelta::minutes(1));
        let swept = f.now();
        let abandoned = s.recover_stale_claims(swept, 0).unwrap().abandoned;
        assert_eq!(abandoned.len(), n);
        let mut ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        let want: Vec<Event> = [
            (Created, [1, 0, 0], json!({}), None, created),
            (Claimed, [1, 1, 0], json!({}), Some(runner), claimed),
            (Abandoned, [1, 1, 0], with("reason", reason), None, swept),
        ]
        .into_iter()
        .flat_map(|(event, counters, extra, runner, at)| {
            let data = data(counters, extra);
            ids.iter().map(move |&id| (id, event, data.clone(), runner, at))
        })
        .collect();
        let events = s.events_for_workflow(wf, None, 3 * n as u32).unwrap();
        assert_history(&f, &events, wf, &want);
        let first = events.iter().filter(|e| e.task_execution_id == ids[0]);
        assert!(first.eq(&s.events_for_task(ids[0]).unwrap()));
    }
}
