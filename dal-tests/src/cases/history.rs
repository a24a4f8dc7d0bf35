//! The history: one event per change, atomically, none for a refused or rolled-back call, the
//! same on every backend; none with the history off.

use super::model_based::{Op::*, run_sequence, spec};
use super::support::{checked_history, expect_err, new_row, ready_tasks, task_in, workflow};
use crate::case;
use crate::model::counters;
use crate::suite::{Backend, Case, Fixture};
use chrono::{DateTime, TimeDelta, Utc};
use dal_core::EventType::{self, *};
use dal_core::{DalError, DatabaseErrorKind as Kind, ExecutionEvent, NewTaskExecution};
use dal_core::{TaskExecution, TaskStatus as S};
use serde_json::{Value, json};
use std::collections::HashSet;
use uuid::Uuid;

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

/// The first workflow execution of the model's sequences.
const WORKFLOW: Uuid = Uuid::from_u128(0xA1);

/// An event as expected: task, type, data, runner, time (`seq` and `id` are checked apart).
type Event = (Uuid, EventType, Value, Option<Uuid>, DateTime<Utc>);

/// `e` as an [`Event`] of type `event_type`.
fn as_expected(e: &ExecutionEvent, event_type: EventType) -> Event {
    (e.task_execution_id, event_type, e.event_data.clone(), e.runner_id, e.created_at)
}

/// `events` are `want` (none with the history off), of `wf`, `seq` rising, ids distinct UUIDv7s
/// of their millisecond.
fn assert_history(f: &Fixture, events: &[ExecutionEvent], wf: Uuid, want: &[Event]) {
    let want = if f.keeps_history() { want } else { &[] };
    let got: Vec<Event> = events.iter().map(|e| as_expected(e, e.event_type)).collect();
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

/// Every kind of change leaves exactly the model's event, each after another workflow's change;
/// a refused call leaves none. Distinct UUIDv7 ids of their times, rising `seq`, pages in order.
fn each_change_leaves_exactly_its_event_and_a_refused_call_none(kind: Backend) {
    let f = Fixture::new(kind);
    let cycle = |done: Vec<usize>, failed: Vec<(usize, usize)>, limit| {
        Cycle(0, done, failed, limit, vec![], false)
    };
    #[rustfmt::skip]
    let steps = [
        Transition(0, 0, 0, 0), Claim(0, 1), Leased(0, 2, 1), Transition(0, 6, 0, 0), Claim(1, 1),
        Sweep(0, 3), Claim(2, 1), SubStatus(0, 2), SubStatus(0, 0), Leased(2, 3, 0),
        Transition(0, 2, 0, 0), Transition(0, 4, 1, 0), Transition(0, 6, 0, 3_600),
        Transition(0, 7, 0, 0), Transition(0, 1, 3, 0), Transition(0, 8, 0, 0),
        Transition(0, 5, 2, 0), Transition(0, 8, 0, 0), cycle(vec![], vec![], 1), Leased(3, 1, 0),
        Transition(0, 8, 0, 0), cycle(vec![], vec![], 1), cycle(vec![4], vec![], 0),
        Transition(0, 8, 0, 0), cycle(vec![], vec![], 1), cycle(vec![], vec![(5, 1)], 0),
    ];
    let mut ops = vec![Create(spec(0, 0, false, 3)), Create(spec(1, 0, true, 1))];
    for (i, step) in steps.into_iter().enumerate() {
        // A change of the other workflow's task; the clock moved on (a minute before the sweep).
        ops.extend([Transition(1, 7, 0, 0), Advance(if i == 5 { 60 } else { 1 }), step]);
        if i == 1 {
            ops.push(Leased(0, 0, 0)); // not history
        }
    }
    // Refused: starting a failed task, a retry without attempts, lost leases, a NUL, a taken
    // name (alone and in a batch), a sweep with nothing stale.
    ops.extend([2, 4].map(|t| Transition(1, t, 1, 0)));
    ops.extend([Transition(0, 2, 0, 0), Transition(1, 6, 0, 0), Leased(0, 1, 0), Leased(0, 0, 0)]);
    ops.extend([Transition(0, 4, 4, 0), Create(spec(0, 0, true, 1))]);
    ops.extend([CreateMany(vec![spec(0, 1, true, 1), spec(0, 0, true, 1)]), Sweep(0, 3)]);
    if let Err(failure) = run_sequence(&f, &ops) {
        panic!("{kind}: the store disagrees with the model: {failure}");
    }
    let (s, wf) = (f.store(), WORKFLOW);
    let all = s.events_for_workflow(wf, None, 100).unwrap();
    let types = [Created, Ready, Claimed, Failed, RetryScheduled, Claimed, Recovered, Claimed];
    let more = [Deferred, Resumed, Released, Started, Failed, RetryScheduled, Recovered, Skipped];
    let rest = [Reset, Abandoned, Reset, Claimed, Completed, Reset, Claimed, Completed, Reset];
    let want = [&types[..], &more, &rest, &[Claimed, Failed]].concat();
    let want: Vec<Event> = want.into_iter().zip(&all).map(|(t, e)| as_expected(e, t)).collect();
    assert_eq!(want.len(), if f.keeps_history() { 27 } else { 0 });
    assert_history(&f, &all, wf, &want);
    let id = s.list_for_workflow(wf).unwrap()[0].id;
    assert_eq!(s.events_for_task(id).unwrap(), all);
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
        use Kind::{ConstraintViolation, Other};
        let refused = matches!(err, DalError::Database { kind: ConstraintViolation | Other, .. });
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
        let mut abandoning = counters(1, 1, 0);
        abandoning["reason"] = json!(reason);
        let want: Vec<Event> = [
            (Created, counters(1, 0, 0), None, created),
            (Claimed, counters(1, 1, 0), Some(runner), claimed),
            (Abandoned, abandoning, None, swept),
        ]
        .into_iter()
        .flat_map(|(event, data, runner, at)| {
            ids.iter().map(move |&id| (id, event, data.clone(), runner, at))
        })
        .collect();
        let events = s.events_for_workflow(wf, None, 3 * n as u32).unwrap();
        assert_history(&f, &events, wf, &want);
        let first = events.iter().filter(|e| e.task_execution_id == ids[0]);
        assert!(first.eq(&s.events_for_task(ids[0]).unwrap()));
    }
}
