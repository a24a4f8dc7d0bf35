//! Values that must come back exactly as they went in, on every backend.

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::Clock;
use dal_core::clock::to_micros;
use dal_core::validate::{MESSAGE_MAX_BYTES, TASK_NAME_MAX_CHARS};
use dal_core::{NewTaskExecution, TaskStatus};
use serde_json::{Value, json};

use super::Case;
use super::support::{task_in, workflow};
use crate::backend::Backend;
use crate::case;
use crate::fixture::Fixture;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(times_are_kept_to_the_microsecond),
    case!(the_first_and_last_storable_times_round_trip),
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
