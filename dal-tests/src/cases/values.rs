//! Values that must come back exactly as they went in, on every backend.

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::Clock;
use dal_core::clock::to_micros;
use dal_core::event::time_value;
use dal_core::validate::earliest_time;
use dal_core::validate::{MESSAGE_MAX_BYTES, TASK_NAME_MAX_CHARS};
use dal_core::{EventType, NewTaskExecution, PruneCursor, TaskStatus};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};
use uuid::Uuid;

use super::support::{ready_tasks, task_in, workflow};
use crate::case;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::Fixture;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(times_are_kept_to_the_microsecond),
    case!(the_first_and_last_storable_times_round_trip),
    case!(every_time_a_caller_gives_is_cut_to_the_microsecond),
    case!(json_documents_round_trip_exactly),
    case!(text_that_looks_like_sql_is_stored_verbatim),
    case!(names_and_messages_at_their_limits_round_trip),
];

fn times_are_kept_to_the_microsecond(kind: Backend) {
    let f = Fixture::new(kind);
    // The clock has nanoseconds; the store writes microseconds, cut towards the past.
    assert_eq!(f.clock.now().timestamp_subsec_nanos() % 1_000, 789);
    let retry_at = f.clock.now() + TimeDelta::nanoseconds(999);
    let task = f
        .store
        .create(&NewTaskExecution {
            retry_at: Some(retry_at),
            ..NewTaskExecution::new(workflow(), "t")
        })
        .unwrap();
    assert_eq!(task.created_at, to_micros(f.clock.now()));
    assert_eq!(task.created_at.timestamp_subsec_nanos() % 1_000, 0);
    assert_eq!(task.retry_at, Some(to_micros(retry_at)));
    assert_eq!(f.store.get(task.id).unwrap(), task);
    // One microsecond apart is apart.
    f.clock.advance(TimeDelta::microseconds(1));
    let ready = f.store.mark_ready(task.id).unwrap();
    assert_eq!(
        ready.updated_at - task.updated_at,
        TimeDelta::microseconds(1)
    );
}

fn the_first_and_last_storable_times_round_trip(kind: Backend) {
    let f = Fixture::new(kind);
    let first = "0001-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let last = "9999-12-31T23:59:59.999999Z"
        .parse::<DateTime<Utc>>()
        .unwrap();
    for (name, at) in [
        ("first", first),
        ("last", last),
        ("epoch", DateTime::UNIX_EPOCH),
    ] {
        let task = f
            .store
            .create(&NewTaskExecution {
                retry_at: Some(at),
                ..NewTaskExecution::new(workflow(), name)
            })
            .unwrap();
        assert_eq!(task.retry_at, Some(at), "{name}");
        assert_eq!(f.store.get(task.id).unwrap().retry_at, Some(at), "{name}");
        let running = task_in(f.store(), workflow(), name, TaskStatus::Running, 2);
        let retried = f.store.schedule_retry(running.id, at).unwrap();
        assert_eq!(retried.retry_at, Some(at), "{name}");
    }
}

/// A time a caller may give: with nanoseconds, before 1970 (a negative Unix time), before
/// 2000 (PostgreSQL's epoch, around which it rounds), far in the future; edges and anywhere
/// in the years 1 to 9999.
fn caller_time() -> impl Strategy<Value = DateTime<Utc>> {
    let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    let last_second = at("9999-12-31T23:59:59Z").timestamp();
    let edges = [
        at("1990-01-01T00:00:00.123456789Z"),
        at("1969-12-31T23:59:59.999999999Z"),
        at("1970-01-01T00:00:00.000000500Z"),
        at("1999-12-31T23:59:59.999999500Z"),
        at("2000-01-01T00:00:00.000000500Z"),
        at("0001-01-01T00:00:00.000000999Z"),
        at("9999-12-31T23:59:59.999999999Z"),
        at("2026-03-01T12:00:00.123456501Z"),
    ];
    prop_oneof![
        1 => proptest::sample::select(edges.to_vec()),
        3 => (earliest_time().timestamp()..=last_second, 0..1_000_000_000u32)
            .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap()),
    ]
}

/// Every time a caller gives (a retry time, a sweep's threshold, a retention cursor) is cut to
/// whole microseconds towards the past before it is written or compared, so each backend
/// stores and compares the same value: the row, its history event and the read agree with
/// [`to_micros`] of the input on every backend, and hence with each other (PostgreSQL itself
/// rounds a sub-microsecond part to the nearest, and towards 2000-01-01 before it; SQLite's
/// integer micros would round down).
fn every_time_a_caller_gives_is_cut_to_the_microsecond(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_0001),
        ..Config::default()
    });
    let result = runner.run(&(caller_time(), 1..1_000i64), |(at, nanos)| {
        f.execute_sql(kind.empty_tables_sql());
        let cut = to_micros(at);
        // A retry time given at creation and by schedule_retry: row, read and event.
        let created = s
            .create(&NewTaskExecution {
                retry_at: Some(at),
                ..NewTaskExecution::new(workflow(), "created")
            })
            .map_err(|e| TestCaseError::fail(format!("create: {e}")))?;
        prop_assert_eq!(created.retry_at, Some(cut));
        prop_assert_eq!(s.get(created.id).unwrap().retry_at, Some(cut));
        let running = task_in(s, workflow(), "retried", TaskStatus::Running, 2);
        let retried = s.schedule_retry(running.id, at).unwrap();
        prop_assert_eq!(retried.retry_at, Some(cut));
        prop_assert_eq!(s.get(running.id).unwrap(), retried.clone());
        let events = s.events_for_task(running.id).unwrap();
        if f.keeps_history() {
            let event = events.last().unwrap();
            prop_assert_eq!(event.event_type, EventType::RetryScheduled);
            prop_assert_eq!(&event.event_data["retry_at"], &time_value(cut));
        } else {
            prop_assert!(events.is_empty());
        }

        // A sweep's threshold: a claim heart-beaten at `cut` is stale before `cut` + 1 µs,
        // not before `cut` plus less than a microsecond. (On its own: the retried task may be
        // due by then.)
        f.execute_sql(kind.empty_tables_sql());
        f.clock.set(cut);
        let task = ready_tasks(s, workflow(), 1, 1).remove(0);
        let claim = s.claim_ready(Uuid::now_v7(), 1).unwrap().remove(0);
        prop_assert_eq!(claim.task.id, task.id);
        prop_assert_eq!(claim.task.heartbeat_at, Some(cut));
        let almost = cut + TimeDelta::nanoseconds(nanos);
        prop_assert!(s.find_stale_claims(almost).unwrap().is_empty(), "{almost}");
        prop_assert!(s.recover_stale_claims(almost, 5).unwrap().reset.is_empty());
        // The microsecond after the last storable one is not a valid threshold.
        let next = cut + TimeDelta::microseconds(1);
        let next_storable = dal_core::validate::time("next", next).is_ok();
        if next_storable {
            let stale = s.find_stale_claims(next).unwrap();
            prop_assert_eq!(stale, vec![s.get(task.id).unwrap()]);
        }

        // A retention cursor: a cursor `nanos` after the task's finish is the cursor at its
        // finish, so the batch after it reads the task.
        let done = s.complete(&claim.lease).unwrap();
        prop_assert_eq!(done.completed_at, Some(cut));
        if next_storable {
            let pruned = s
                .prune_finished(
                    next,
                    10,
                    Some(PruneCursor {
                        completed_at: almost,
                        task_id: Uuid::nil(),
                    }),
                )
                .unwrap();
            prop_assert_eq!(pruned.workflows, vec![done.workflow_execution_id]);
        }
        f.clock.set(crate::suite::start_time());
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{kind}: {failure}");
    }
}

/// JSON documents that must round-trip unchanged.
pub fn json_samples() -> Vec<Value> {
    vec![
        json!({}),
        json!([]),
        json!(null),
        json!(true),
        json!("plain"),
        json!(0),
        json!(-1),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(0.1),
        json!(1e300),
        json!(5e-324),
        json!(-2.5e-8),
        json!(123_456_789.123_456_79),
        json!({"b": 1, "a": [1, 2, {"c": null}], "é🦀": "ключ", "": ""}),
        json!({"quote": "\"", "backslash": "\\", "newline": "a\nb", "tab": "\t", "control": "\u{1}"}),
        json!({"sql": "'); DROP TABLE task_executions; --", "unicode": "\u{10FFFF}\u{FEFF}"}),
        json!([[[[[[[[["deep"]]]]]]]]]),
    ]
}

fn json_documents_round_trip_exactly(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let samples = json_samples();
    let news: Vec<NewTaskExecution> = samples
        .iter()
        .enumerate()
        .map(|(i, value)| {
            NewTaskExecution::new(wf, format!("t{i}"))
                .with_configuration(value.clone())
                .with_trigger_rules(json!({"type": "Custom", "value": value}))
        })
        .collect();
    let created = f.store.create_many(&news).unwrap();
    for ((row, value), new) in created.iter().zip(&samples).zip(&news) {
        assert_eq!(&row.task_configuration, value);
        assert_eq!(row.trigger_rules, new.trigger_rules);
        let read = f.store.get(row.id).unwrap();
        assert_eq!(&read.task_configuration, value);
        assert_eq!(read.trigger_rules, new.trigger_rules);
    }
    // And one at a time.
    for (i, value) in samples.iter().enumerate() {
        let row = f
            .store
            .create(
                &NewTaskExecution::new(wf, format!("single{i}")).with_configuration(value.clone()),
            )
            .unwrap();
        assert_eq!(&row.task_configuration, value);
    }
}

fn text_that_looks_like_sql_is_stored_verbatim(kind: Backend) {
    let f = Fixture::new(kind);
    let hostile = [
        "'); DROP TABLE task_executions; --",
        "Robert'); DELETE FROM task_executions WHERE ('1'='1",
        "$1 ? :name %s %_ \\' \" ` ;",
        "status = 'completed' OR 1=1",
    ];
    let wf = workflow();
    for (i, text) in hostile.iter().enumerate() {
        let task = task_in(f.store(), wf, text, TaskStatus::Running, 2);
        assert_eq!(task.task_name, *text);
        let failed = f.store.mark_failed(task.id, text).unwrap();
        assert_eq!(failed.error_details.as_deref(), Some(*text));
        assert_eq!(failed.last_error.as_deref(), Some(*text));
        assert_eq!(f.store.get(task.id).unwrap(), failed);
        assert_eq!(f.store.list_for_workflow(wf).unwrap().len(), i + 1);
    }
}

fn names_and_messages_at_their_limits_round_trip(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    // 255 four-byte characters: the limit counts characters, on both backends.
    let name = "🦀".repeat(TASK_NAME_MAX_CHARS);
    let task = task_in(f.store(), wf, &name, TaskStatus::Ready, 1);
    assert_eq!(task.task_name, name);
    let message = "é".repeat(MESSAGE_MAX_BYTES / 2);
    assert_eq!(message.len(), MESSAGE_MAX_BYTES);
    let failed = f.store.mark_failed(task.id, &message).unwrap();
    assert_eq!(failed.error_details.as_deref(), Some(message.as_str()));
    assert_eq!(f.store.get(task.id).unwrap(), failed);
    // An empty reason is a reason, not a missing one.
    let other = task_in(f.store(), wf, "empty", TaskStatus::Ready, 1);
    let skipped = f.store.mark_skipped(other.id, "").unwrap();
    assert_eq!(skipped.error_details.as_deref(), Some(""));
    assert_eq!(
        f.store.get(other.id).unwrap().error_details.as_deref(),
        Some("")
    );
}
