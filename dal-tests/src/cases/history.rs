//! The execution history: one event per change, atomically with it, none for a rejected or
//! rolled-back call; the same events on every backend.

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::event::time_value;
use dal_core::{
    Clock, DalError, EventType, ExecutionEvent, NewTaskExecution, TaskExecution, TaskStatus,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::support::{expect_err, new_row, ready_tasks, task_in, workflow};
use crate::case;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::Fixture;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(a_whole_life_leaves_exactly_the_expected_history),
    case!(every_lease_less_transition_leaves_its_event),
    case!(rejected_calls_leave_no_event),
    case!(batches_leave_one_event_per_task),
    case!(batches_of_every_size_log_each_event_in_task_order),
    case!(a_change_whose_event_cannot_be_written_is_rolled_back),
    case!(a_workflow_history_pages_in_order),
];

/// The cases of a store with the history off, in place of [`CASES`].
pub const OFF: &[Case] = &[case!(no_write_leaves_an_event_with_the_history_off)];

/// Every kind of write, through a task's whole life and a sweep, a cycle and a batch: the
/// rows change as with the history kept, and no event is written, nor read back.
fn no_write_leaves_an_event_with_the_history_off(kind: Backend) {
    let f = Fixture::new(kind);
    assert!(!f.keeps_history());
    let s = f.store();
    let wf = workflow();
    let tasks = ready_tasks(s, wf, 4, 2);
    let one = s.create(&NewTaskExecution::new(wf, "one")).expect("create");
    s.mark_ready(one.id).expect("mark_ready");
    s.mark_skipped(one.id, "not needed").expect("mark_skipped");
    let runner = Uuid::now_v7();
    let claimed = s.claim_ready(runner, 3).expect("claim_ready");
    assert_eq!(claimed.len(), 3);
    s.heartbeat(&claimed[0].lease).expect("heartbeat");
    s.set_sub_status(claimed[0].task.id, Some(dal_core::SubStatus::Deferred))
        .expect("set_sub_status");
    let failed = s.fail(&claimed[1].lease, "boom").expect("fail");
    s.schedule_retry(failed.id, f.now())
        .expect("schedule_retry");
    let cycle = s
        .finish_and_claim(
            runner,
            &dal_core::Finished {
                retried: Vec::new(),
                completed: vec![claimed[0].lease],
                failed: vec![dal_core::FailedTask {
                    lease: claimed[2].lease,
                    error: "bang".into(),
                }],
            },
            2,
        )
        .expect("finish_and_claim");
    assert_eq!(
        (
            cycle.completed.len(),
            cycle.failed.len(),
            cycle.claimed.len()
        ),
        (1, 1, 2)
    );
    f.clock.advance(TimeDelta::minutes(5));
    let swept = s
        .recover_stale_claims(f.now() - TimeDelta::minutes(1), 3)
        .expect("recover_stale_claims");
    assert_eq!(swept.reset.len(), 2);
    let statuses: Vec<TaskStatus> = s
        .list_for_workflow(wf)
        .expect("list_for_workflow")
        .iter()
        .map(|t| t.status)
        .collect();
    assert_eq!(statuses.len(), tasks.len() + 1);
    assert_eq!(
        s.events_for_workflow(wf, None, 1_000).expect("events"),
        vec![]
    );
    for task in tasks.iter().chain([&one]) {
        assert_eq!(s.events_for_task(task.id).expect("events"), vec![]);
    }
}

/// An event as a case expects it: everything but `seq` and `id`, which are checked apart.
#[derive(Debug, PartialEq)]
struct Expected {
    task: Uuid,
    event_type: EventType,
    data: Value,
    runner: Option<Uuid>,
    at: DateTime<Utc>,
}

fn expected(
    task: Uuid,
    event_type: EventType,
    data: Value,
    runner: Option<Uuid>,
    at: DateTime<Utc>,
) -> Expected {
    Expected {
        task,
        event_type,
        data,
        runner,
        at,
    }
}

/// Checks `events` against `want`, field by field, and that `seq` increases and each `id` is a
/// UUIDv7 of the event's millisecond, and that all belong to `wf`.
fn assert_history(events: &[ExecutionEvent], wf: Uuid, want: &[Expected]) {
    let got: Vec<Expected> = events
        .iter()
        .map(|e| {
            expected(
                e.task_execution_id,
                e.event_type,
                e.event_data.clone(),
                e.runner_id,
                e.created_at,
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(
        events.windows(2).all(|w| w[0].seq < w[1].seq),
        "seq increases"
    );
    for event in events {
        assert_eq!(event.workflow_execution_id, wf);
        assert_eq!(event.id.get_version_num(), 7, "{event:?}");
        let (secs, nanos) = event.id.get_timestamp().unwrap().to_unix();
        let millis = secs as i64 * 1_000 + i64::from(nanos / 1_000_000);
        assert_eq!(millis, event.created_at.timestamp_millis(), "{event:?}");
    }
}

fn counters(attempt: i32, claim: i32, recovery_attempts: i32) -> Value {
    json!({ "attempt": attempt, "claim": claim, "recovery_attempts": recovery_attempts })
}

fn with(mut data: Value, key: &str, value: Value) -> Value {
    data[key] = value;
    data
}

fn a_whole_life_leaves_exactly_the_expected_history(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let t0 = f.now();
    let task = s
        .create(&NewTaskExecution::new(wf, "etl").with_max_attempts(2))
        .unwrap();
    let id = task.id;
    let t1 = f.tick();
    s.mark_ready(id).unwrap();
    let t2 = f.tick();
    let first = s.claim_ready(a, 1).unwrap().remove(0);
    f.tick();
    s.heartbeat(&first.lease).unwrap(); // not history
    let t3 = f.tick();
    s.fail(&first.lease, "boom").unwrap();
    let t4 = f.tick();
    s.schedule_retry(id, t4).unwrap();
    let t5 = f.tick();
    s.claim_ready(b, 1).unwrap();
    // Runner b crashes: no heartbeat for a minute.
    f.clock.advance(TimeDelta::minutes(1));
    let t6 = f.now();
    let stale_before = t6 - TimeDelta::seconds(30);
    assert_eq!(
        s.recover_stale_claims(stale_before, 3).unwrap().reset.len(),
        1
    );
    let t7 = f.tick();
    let last = s.claim_ready(c, 1).unwrap().remove(0);
    let t8 = f.tick();
    s.complete(&last.lease).unwrap();

    let want = [
        expected(id, EventType::Created, counters(1, 0, 0), None, t0),
        expected(id, EventType::Ready, counters(1, 0, 0), None, t1),
        expected(id, EventType::Claimed, counters(1, 1, 0), Some(a), t2),
        expected(
            id,
            EventType::Failed,
            with(counters(1, 1, 0), "error", json!("boom")),
            Some(a),
            t3,
        ),
        expected(
            id,
            EventType::RetryScheduled,
            with(counters(2, 1, 0), "retry_at", time_value(t4)),
            None,
            t4,
        ),
        expected(id, EventType::Claimed, counters(2, 2, 0), Some(b), t5),
        expected(
            id,
            EventType::Recovered,
            with(counters(2, 2, 1), "stale_before", time_value(stale_before)),
            None,
            t6,
        ),
        expected(id, EventType::Claimed, counters(2, 3, 1), Some(c), t7),
        expected(id, EventType::Completed, counters(2, 3, 1), Some(c), t8),
    ];
    let events = s.events_for_task(id).unwrap();
    assert_history(&events, wf, &want);
    assert_eq!(s.events_for_workflow(wf, None, 100).unwrap(), events);
    assert!(s.events_for_task(Uuid::now_v7()).unwrap().is_empty());
}

fn every_lease_less_transition_leaves_its_event(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let mut want = Vec::new();
    let task = s
        .create(&NewTaskExecution::new(wf, "t").with_max_attempts(3))
        .unwrap();
    let id = task.id;
    want.push(expected(
        id,
        EventType::Created,
        counters(1, 0, 0),
        None,
        f.now(),
    ));
    let mut step = |event_type: EventType, data: Value, run: &dyn Fn(DateTime<Utc>)| {
        let at = f.tick();
        run(at);
        want.push(expected(id, event_type, data, None, at));
    };
    let retry_at = f.now() + TimeDelta::milliseconds(1_500) + TimeDelta::seconds(3);
    step(EventType::Ready, counters(1, 0, 0), &|_| {
        drop(s.mark_ready(id).unwrap())
    });
    step(EventType::Started, counters(1, 0, 0), &|_| {
        drop(s.mark_running(id).unwrap())
    });
    step(
        EventType::Failed,
        with(counters(1, 0, 0), "error", json!("e1")),
        &|_| drop(s.mark_failed(id, "e1").unwrap()),
    );
    step(
        EventType::RetryScheduled,
        with(counters(2, 0, 0), "retry_at", time_value(retry_at)),
        &|_| drop(s.schedule_retry(id, retry_at).unwrap()),
    );
    step(EventType::Recovered, counters(2, 0, 1), &|_| {
        drop(s.reset_task_for_recovery(id).unwrap())
    });
    step(
        EventType::Skipped,
        with(counters(2, 0, 1), "reason", json!("not needed")),
        &|_| drop(s.mark_skipped(id, "not needed").unwrap()),
    );
    step(EventType::Reset, counters(1, 0, 1), &|_| {
        drop(s.reset_retry_state(id).unwrap())
    });
    step(
        EventType::Abandoned,
        with(counters(1, 0, 1), "reason", json!("gave up")),
        &|_| drop(s.mark_abandoned(id, "gave up").unwrap()),
    );
    assert_history(&s.events_for_task(id).unwrap(), wf, &want);
    // A release names its runner.
    let other = ready_tasks(s, wf, 1, 1).remove(0);
    let runner = Uuid::now_v7();
    let claimed = s.claim_ready(runner, 1).unwrap().remove(0);
    let at = f.tick();
    s.release(&claimed.lease).unwrap();
    let events = s.events_for_task(other.id).unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(
        (
            events[2].event_type,
            &events[2].event_data,
            events[2].runner_id,
            events[2].created_at
        ),
        (EventType::Released, &counters(1, 1, 0), Some(runner), at)
    );
}

fn rejected_calls_leave_no_event(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let done = task_in(s, wf, "done", TaskStatus::Completed, 1);
    let exhausted = task_in(s, wf, "exhausted", TaskStatus::Failed, 1);
    ready_tasks(s, wf, 1, 1);
    let claim = s.claim_ready(Uuid::now_v7(), 1).unwrap().remove(0);
    s.complete(&claim.lease).unwrap();
    let before = s.events_for_workflow(wf, None, 1_000).unwrap();
    f.tick();
    expect_err(s.mark_running(done.id));
    expect_err(s.schedule_retry(exhausted.id, f.now()));
    expect_err(s.complete(&claim.lease));
    expect_err(s.heartbeat(&claim.lease));
    expect_err(s.mark_failed(done.id, "bad\0"));
    expect_err(s.create(&NewTaskExecution::new(wf, "done")));
    expect_err(s.create_many(&[
        NewTaskExecution::new(wf, "fresh"),
        NewTaskExecution::new(wf, "done"),
    ]));
    assert!(s.recover_stale_claims(f.now(), 3).unwrap() == dal_core::Recovery::default());
    assert_eq!(s.events_for_workflow(wf, None, 1_000).unwrap(), before);
}

/// Batch writes of sizes around each of SQLite's fixed shapes of the tasks' and the events'
/// `INSERT`s (padded to a power of two up to 1,024 rows, compiled per use above): every row is
/// written as given and gets exactly its event, in task id order, and the padding writes
/// nothing.
fn batches_of_every_size_log_each_event_in_task_order(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let runner = Uuid::now_v7();
    for n in [
        2, 3, 31, 32, 33, 127, 128, 129, 255, 256, 257, 511, 512, 513, 1023, 1024, 1025,
    ] {
        let wf = workflow();
        let tasks = ready_tasks(s, wf, n, 1);
        // The rows as given, in input order, and as stored.
        let names: Vec<String> = tasks.iter().map(|t| t.task_name.clone()).collect();
        assert_eq!(
            names,
            (0..n).map(|i| format!("r{i:05}")).collect::<Vec<_>>()
        );
        for task in &tasks {
            let want = TaskExecution {
                status: TaskStatus::Ready,
                ..new_row(task.id, wf, &task.task_name, f.now())
            };
            assert_eq!(task, &want);
        }
        let mut stored = s.list_for_workflow(wf).unwrap();
        stored.sort_unstable_by(|a, b| a.task_name.cmp(&b.task_name));
        assert_eq!(stored, tasks, "{n} tasks as stored");
        let claimed = s.claim_ready(runner, n as u32).unwrap();
        assert_eq!(claimed.len(), n, "{n} tasks");
        let events = s.events_for_workflow(wf, None, 2 * n as u32).unwrap();
        let mut ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
        ids.sort_unstable();
        let mut want: Vec<Expected> = ids
            .iter()
            .map(|&id| {
                expected(
                    id,
                    EventType::Created,
                    counters(1, 0, 0),
                    None,
                    tasks[0].created_at,
                )
            })
            .collect();
        want.extend(ids.iter().map(|&id| {
            expected(
                id,
                EventType::Claimed,
                counters(1, 1, 0),
                Some(runner),
                claimed[0].task.updated_at,
            )
        }));
        assert_history(&events, wf, &want);
    }
}

fn batches_leave_one_event_per_task(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let tasks = ready_tasks(s, wf, 50, 1);
    let runner = Uuid::now_v7();
    let claimed = s.claim_ready(runner, 20).unwrap();
    f.clock.advance(TimeDelta::minutes(1));
    let at = f.now();
    let recovery = s
        .recover_stale_claims(at - TimeDelta::seconds(30), 0)
        .unwrap();
    assert_eq!(recovery.abandoned.len(), 20);
    let events = s.events_for_workflow(wf, None, 1_000).unwrap();
    let of = |t: EventType| {
        events
            .iter()
            .filter(|e| e.event_type == t)
            .collect::<Vec<_>>()
    };
    assert_eq!(of(EventType::Created).len(), 50);
    assert_eq!(events.len(), 50 + 20 + 20);
    let claimed_events = of(EventType::Claimed);
    assert!(
        claimed_events
            .iter()
            .all(|e| e.runner_id == Some(runner) && e.event_data == counters(1, 1, 0))
    );
    let mut claimed_ids: Vec<Uuid> = claimed_events.iter().map(|e| e.task_execution_id).collect();
    claimed_ids.sort_unstable();
    assert_eq!(
        claimed_ids,
        claimed.iter().map(|c| c.task.id).collect::<Vec<_>>()
    );
    let reason =
        "abandoned: its runner stopped heart-beating and the task was already recovered 0 times";
    for event in of(EventType::Abandoned) {
        assert_eq!(
            event.event_data,
            with(counters(1, 1, 0), "reason", json!(reason))
        );
        assert_eq!((event.runner_id, event.created_at), (None, at));
    }
    // Each task has its own history, in order.
    for task in &tasks[..20] {
        let types: Vec<EventType> = s
            .events_for_task(task.id)
            .unwrap()
            .iter()
            .map(|e| e.event_type)
            .collect();
        assert_eq!(
            types,
            [EventType::Created, EventType::Claimed, EventType::Abandoned]
        );
    }
    // Distinct event ids.
    let mut ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len());
}

fn a_change_whose_event_cannot_be_written_is_rolled_back(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let running = task_in(s, wf, "running", TaskStatus::Running, 1);
    let ready = ready_tasks(s, wf, 3, 1);
    let events_before = s.events_for_workflow(wf, None, 1_000).unwrap();
    // From now on the database refuses 'failed', 'claimed' and 'created' events.
    for event_type in ["failed", "claimed", "created"] {
        f.execute_sql(&kind.refuse_events_sql(event_type));
    }
    f.tick();
    let err = expect_err(s.mark_failed(running.id, "boom"));
    assert!(matches!(err, DalError::Database { .. }), "{err:?}");
    super::support::assert_unchanged(s, &running);
    let err = expect_err(s.claim_ready(Uuid::now_v7(), 10));
    assert!(matches!(err, DalError::Database { .. }), "{err:?}");
    for task in &ready {
        super::support::assert_unchanged(s, task);
    }
    let err = expect_err(s.create(&NewTaskExecution::new(wf, "new")));
    assert!(matches!(err, DalError::Database { .. }), "{err:?}");
    let err = expect_err(s.create_many(&[
        NewTaskExecution::new(wf, "x"),
        NewTaskExecution::new(wf, "y"),
    ]));
    assert!(matches!(err, DalError::Database { .. }), "{err:?}");
    assert_eq!(s.list_for_workflow(wf).unwrap().len(), 4);
    assert_eq!(
        s.events_for_workflow(wf, None, 1_000).unwrap(),
        events_before
    );
    // Other changes still go through, with their events.
    s.mark_completed(running.id).unwrap();
    assert_eq!(
        s.events_for_task(running.id)
            .unwrap()
            .last()
            .map(|e| e.event_type),
        Some(EventType::Completed)
    );
}

fn a_workflow_history_pages_in_order(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let (wf, other) = (workflow(), workflow());
    // Two workflows whose changes interleave.
    for round in 0..5 {
        let a = task_in(s, wf, &format!("a{round}"), TaskStatus::Completed, 1);
        let b = task_in(s, other, &format!("b{round}"), TaskStatus::Failed, 1);
        assert_ne!(a.id, b.id);
        f.tick();
    }
    let all = s.events_for_workflow(wf, None, 1_000).unwrap();
    assert_eq!(all.len(), 5 * 4); // created, ready, started, completed
    assert!(all.iter().all(|e| e.workflow_execution_id == wf));
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    for page_size in [1, 3, 7, 20, 100] {
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = s.events_for_workflow(wf, after, page_size).unwrap();
            assert!(page.len() <= page_size as usize);
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            paged.extend(page);
        }
        assert_eq!(paged, all, "pages of {page_size}");
    }
    assert!(s.events_for_workflow(wf, None, 0).unwrap().is_empty());
    assert!(
        s.events_for_workflow(workflow(), None, 10)
            .unwrap()
            .is_empty()
    );
    let last = all.last().map(|e| e.seq);
    assert!(s.events_for_workflow(wf, last, 10).unwrap().is_empty());
    let _ = f.clock.now();
}
