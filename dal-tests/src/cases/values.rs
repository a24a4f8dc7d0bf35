//! What goes in comes back exactly: rows, times, JSON, texts and limits up to their edges; past
//! them, and for taken names, the same typed error on each backend, nothing changed.

use super::support::{BEYOND_ONE_CHUNK, assert_unchanged, fails, fails_after, invalid, new_row};
use super::support::{Sequence, checked_history, ready_tasks, task_in, workflow};
use crate::case;
use crate::model::Failure;
use crate::suite::{Backend, Case, Fixture};
use chrono::{DateTime, TimeDelta, Utc};
use dal_core::TaskStatus::*;
use dal_core::clock::to_micros;
use dal_core::event::time_value;
use dal_core::validate::{JSON_MAX_DEPTH, MESSAGE_MAX_BYTES, TASK_NAME_MAX_CHARS};
use dal_core::validate::{earliest_time, sanitize_message};
use dal_core::{Clock, EventType, NewTaskExecution, Problem, PruneCursor, TaskExecution};
use serde_json::{Value, json};
use uuid::Uuid;

pub const CASES: &[Case] = &[
    case!(created_rows_hold_every_field_in_input_and_creation_order),
    case!(a_taken_name_rejects_the_create_or_the_whole_batch_and_keeps_the_original),
    case!(invalid_input_is_rejected_before_anything_is_written),
    case!(times_round_trip_to_the_microsecond_up_to_the_storable_edges),
    case!(json_documents_round_trip_exactly_and_only_json_is_stored),
    case!(texts_round_trip_verbatim_up_to_their_limits),
    case!(limits_at_their_extremes_and_empty_inputs),
];

const MIB: usize = 1 << 20;

fn ids<'a>(rows: impl IntoIterator<Item = &'a TaskExecution>) -> Vec<Uuid> {
    rows.into_iter().map(|t| t.id).collect()
}

/// `n` new tasks of `wf`, named in order.
fn batch(wf: Uuid, n: usize) -> Vec<NewTaskExecution> {
    let new =
        |i| NewTaskExecution::new(wf, format!("t{i:05}")).with_max_attempts(1 + (i % 4) as i32);
    (0..n).map(new).collect()
}

/// The row `new` is created as, with id `id`, at `now`.
fn created_as(id: Uuid, new: &NewTaskExecution, now: DateTime<Utc>) -> TaskExecution {
    let mut row = new_row(id, new.workflow_execution_id, &new.task_name, now);
    (row.status, row.attempt, row.max_attempts) = (new.status, new.attempt, new.max_attempts);
    (row.trigger_rules, row.retry_at) = (new.trigger_rules.clone(), new.retry_at.map(to_micros));
    row.task_configuration = new.task_configuration.clone();
    row
}

fn created_rows_hold_every_field_in_input_and_creation_order(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let (wf, other, micro) = (workflow(), workflow(), TimeDelta::microseconds(1));
    // The clock has nanoseconds: the store cuts every time to microseconds, towards the past.
    assert_eq!(f.clock.now().timestamp_subsec_nanos() % 1_000, 789);
    let retry_at = f.clock.now() + TimeDelta::seconds(90) + TimeDelta::nanoseconds(987);
    let new = NewTaskExecution {
        status: Ready,
        attempt: 2,
        max_attempts: 5,
        trigger_rules: json!({"type": "All", "of": ["a", "b"]}),
        task_configuration: json!({"timeout_s": 30, "big": 9_007_199_254_740_993_u64}),
        retry_at: Some(retry_at),
        ..NewTaskExecution::new(wf, "extract ✓ 🦀")
    };
    let full = s.create(&new).unwrap();
    assert_eq!(full, created_as(full.id, &new, f.now()));
    assert_eq!((full.retry_at, full.status), (Some(to_micros(retry_at)), Ready));
    // A UUIDv7 carrying the store's time, to the millisecond.
    assert_eq!(full.id.get_version_num(), 7);
    let (secs, nanos) = full.id.get_timestamp().unwrap().to_unix();
    assert_eq!(secs as i64, f.now().timestamp());
    assert_eq!(nanos / 1_000_000, f.now().timestamp_subsec_millis());
    f.tick();
    let defaults = s.create(&NewTaskExecution::new(wf, "load")).unwrap();
    assert_eq!(defaults, new_row(defaults.id, wf, "load", f.now()));
    // One microsecond apart is apart.
    f.clock.advance(micro);
    let ready = s.mark_ready(defaults.id).unwrap();
    assert_eq!(ready.updated_at - defaults.updated_at, micro);
    f.tick();
    let alpha = NewTaskExecution::new(wf, "alpha").with_max_attempts(i32::MAX);
    let most = s.create(&alpha).unwrap();
    assert_eq!(most, created_as(most.id, &alpha, f.now()));
    let mut of_wf = vec![full, ready, most];
    // A batch: two workflows interleaved (a row in three of `wf`), names not in sorted order.
    f.tick();
    let news: Vec<NewTaskExecution> = (0..60)
        .map(|i| {
            NewTaskExecution::new([wf, other, other][i % 3], format!("task-{}", (i * 37) % 60))
                .with_max_attempts(1 + i as i32 % 5)
                .with_configuration(json!({"i": i}))
        })
        .collect();
    let created = s.create_many(&news).unwrap();
    assert_eq!(created.len(), news.len());
    for (row, new) in created.iter().zip(&news) {
        assert_eq!(row, &created_as(row.id, new, f.now()));
    }
    // Rows made by one statement share created_at; ids increase in input order and keep it.
    assert!(created.windows(2).all(|w| w[0].id < w[1].id));
    of_wf.extend(created.iter().step_by(3).cloned());
    for row in of_wf.iter().chain(&created) {
        assert_eq!(&s.get(row.id).unwrap(), row);
    }
    assert_eq!(s.list_for_workflow(wf).unwrap(), of_wf);
    assert_eq!(s.list_for_workflow(workflow()).unwrap(), []);
}

fn a_taken_name_rejects_the_create_or_the_whole_batch_and_keeps_the_original(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    // In one statement, and in the last of several chunks (rolling back those before it).
    for (n, taken) in [(10, 5), (BEYOND_ONE_CHUNK, BEYOND_ONE_CHUNK - 1)] {
        let wf = workflow();
        let news = batch(wf, n);
        let original = s.create(&news[taken].clone().with_max_attempts(1)).unwrap();
        let clash = Failure::AlreadyExists(wf, news[taken].task_name.clone());
        f.tick();
        let got = [s.create_many(&news).map(drop), s.create(&news[taken]).map(drop)];
        assert_eq!(got.map(fails), [clash.clone(), clash]);
        assert_eq!(s.list_for_workflow(wf).unwrap(), [original]);
    }
    // The same names in another workflow execution are other tasks.
    let other = workflow();
    let news = batch(other, BEYOND_ONE_CHUNK);
    let created = s.create_many(&news).unwrap();
    assert!(created.iter().map(|r| &r.task_name).eq(news.iter().map(|n| &n.task_name)));
    assert_eq!(s.list_for_workflow(other).unwrap(), created);
}

/// Inputs that validation rejects, with the field and the problem it must report.
#[rustfmt::skip]
fn invalid_inputs(wf: Uuid) -> Vec<(NewTaskExecution, &'static str, Problem)> {
    use Problem::*;
    let new = |name: &str| NewTaskExecution::new(wf, name);
    let attempts = |attempt, max_attempts| NewTaskExecution { attempt, max_attempts, ..new("ok") };
    let status = |status| new("ok").with_status(status);
    let range = |max: i64, value: i32| OutOfRange { min: 1, max, value: value.into() };
    let chars = |len| TooLong { max: TASK_NAME_MAX_CHARS, len, unit: "characters" };
    let mut deep = json!("leaf");
    for _ in 0..JSON_MAX_DEPTH {
        deep = json!({ "d": deep });
    }
    let rules = new("ok").with_trigger_rules(deep);
    let config = new("ok").with_configuration(json!({"text": "nul\u{0}inside"}));
    let year_10000 =
        NewTaskExecution { retry_at: DateTime::from_timestamp(253_402_300_800, 0), ..new("ok") };
    let (max, most) = ("max_attempts", i32::MAX.into());
    vec![
        (new(""), "task_name", Blank), (new(" \t "), "task_name", Blank),
        (new(&"x".repeat(256)), "task_name", chars(256)),
        // 1 MiB of four-byte characters: the limit counts characters.
        (new(&"🦀".repeat(MIB / 4)), "task_name", chars(MIB / 4)),
        (new("a\0b"), "task_name", ContainsNul), (new("a\u{7}b"), "task_name", ContainsControl),
        (attempts(1, 0), max, range(most, 0)), (attempts(1, -1), max, range(most, -1)),
        (attempts(1, i32::MIN), max, range(most, i32::MIN)),
        (attempts(0, 1), "attempt", range(1, 0)), (attempts(4, 3), "attempt", range(3, 4)),
        (status(Running), "status", StatusNotAllowed(Running)),
        (status(Completed), "status", StatusNotAllowed(Completed)),
        (config, "task_configuration", ContainsNul),
        (rules, "trigger_rules", TooDeep { max: JSON_MAX_DEPTH }),
        (year_10000, "retry_at", TimeOutOfRange),
    ]
}

fn invalid_input_is_rejected_before_anything_is_written(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    for (i, (new, field, problem)) in invalid_inputs(wf).into_iter().enumerate() {
        invalid(&f, field, problem.clone(), || s.create(&new));
        // After `i` valid items in a batch: the item is named, and nothing is written.
        let news = [batch(wf, i), vec![new]].concat();
        invalid(&f, &format!("tasks[{i}].{field}"), problem, || s.create_many(&news));
    }
    let twice = [0, 1].map(|_| NewTaskExecution::new(wf, "a"));
    let duplicate = Problem::DuplicateInBatch { first: 0 };
    invalid(&f, "tasks[1].task_name", duplicate, || s.create_many(&twice));
    assert_eq!(s.list_for_workflow(wf).unwrap(), []);
}

/// Times at the storable edges (years 1 and 9999) round trip; past them, refused before
/// anything is sent. Every time given (retry, sweep threshold, retention cursor) is cut to the
/// microsecond towards the past ([`to_micros`]) before it is written or compared, on every
/// backend (PostgreSQL rounds to the nearest, towards 2000 before it; SQLite's micros down).
fn times_round_trip_to_the_microsecond_up_to_the_storable_edges(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let parse = |text: &str| text.parse::<DateTime<Utc>>().unwrap();
    let (first, last) = (parse("0001-01-01T00:00:00Z"), parse("9999-12-31T23:59:59.999999Z"));
    let retrying =
        |wf, name, at| NewTaskExecution { retry_at: Some(at), ..NewTaskExecution::new(wf, name) };
    ready_tasks(s, wf, 3, 2);
    let claimed = s.claim_ready(Uuid::now_v7(), 3).unwrap();
    let tasks: Vec<TaskExecution> = claimed.into_iter().map(|c| c.task).collect();
    // Thresholds at the edges: nothing is older than the first time, everything than the last.
    assert_eq!(s.find_stale_claims(first).unwrap(), []);
    assert_eq!(ids(&s.find_stale_claims(last).unwrap()), ids(&tasks));
    // Past the edges, or at chrono's own limits: refused, nothing sent, nothing changed.
    let one = TimeDelta::microseconds(1);
    let refused = |field: &str| Failure::Validation(field.into(), Problem::TimeOutOfRange);
    for at in [first - one, last + one, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
        let new = retrying(wf, "edge".into(), at);
        let got = [
            fails_after(&f, 0, || s.find_stale_claims(at)),
            fails_after(&f, 0, || s.recover_stale_claims(at, 1)),
            fails_after(&f, 0, || s.schedule_retry(tasks[0].id, at)),
            fails_after(&f, 0, || s.create(&new)),
        ];
        assert_eq!(got, ["older_than", "older_than", "retry_at", "retry_at"].map(refused));
    }
    tasks.iter().for_each(|task| assert_unchanged(s, task));
    // At the edges (and at 1970), kept exactly by a create and by a retry.
    let mut retried = Vec::new();
    for (at, task) in [first, DateTime::UNIX_EPOCH, last].into_iter().zip(&tasks) {
        let created = s.create(&retrying(wf, at.to_string(), at)).unwrap();
        let row = s.schedule_retry(task.id, at).unwrap();
        assert_eq!((created.retry_at, row.retry_at), (Some(at), Some(at)));
        assert_eq!([s.get(created.id).unwrap(), s.get(task.id).unwrap()], [created, row.clone()]);
        retried.push(row);
    }
    // Retries due at the first storable time and at 1970 are due now; one at the last never.
    assert_eq!(s.list_due_retries(10).unwrap(), retried[..2]);
    assert_eq!(s.list_ready(10).unwrap(), retried[..2]);
    // With nanoseconds: before 1970, around 2000, at the edges; then anywhere in 1 to 9999.
    #[rustfmt::skip]
    let times = [
        "1990-01-01T00:00:00.123456789Z", "1969-12-31T23:59:59.999999999Z",
        "1970-01-01T00:00:00.000000500Z", "1999-12-31T23:59:59.999999500Z",
        "2000-01-01T00:00:00.000000500Z", "0001-01-01T00:00:00.000000999Z",
        "9999-12-31T23:59:59.999999999Z", "2026-03-01T12:00:00.123456501Z",
    ];
    let mut times = times.map(parse).to_vec();
    let (mut random, from) = (Sequence::new(0x5eed_0001), earliest_time().timestamp());
    let step = (last.timestamp() - from) / i64::from(u32::MAX);
    times.extend((0..40).map(|_| {
        let secs = from + step * i64::from(random.next_in(0, u32::MAX - 1));
        DateTime::from_timestamp(secs, random.next_in(0, 999_999_999)).unwrap()
    }));
    for at in times {
        f.execute_sql(kind.empty_tables_sql());
        f.clock.set(crate::suite::start_time());
        let cut = to_micros(at);
        // A retry time given at creation and by schedule_retry: row, read and event.
        let created = s.create(&retrying(workflow(), "created".into(), at)).unwrap();
        let running = task_in(s, workflow(), "retried", Running, 2);
        let retried = s.schedule_retry(running.id, at).unwrap();
        assert_eq!((created.retry_at, retried.retry_at), (Some(cut), Some(cut)), "{at}");
        assert_eq!(s.get(created.id).unwrap(), created, "{at}");
        assert_eq!(s.get(running.id).unwrap(), retried, "{at}");
        if let Some(event) = checked_history(&f, &retried).last() {
            assert_eq!(event.event_type, EventType::RetryScheduled);
            assert_eq!(event.event_data["retry_at"], time_value(cut), "{at}");
        }
        // A claim heart-beaten at `cut` is stale before `cut` + 1 µs, not before `cut` + < 1 µs
        // (alone: the retried task may be due).
        f.execute_sql(kind.empty_tables_sql());
        f.clock.set(cut);
        let task = ready_tasks(s, workflow(), 1, 1).remove(0);
        let claim = s.claim_ready(Uuid::now_v7(), 1).unwrap().remove(0);
        assert_eq!((claim.task.id, claim.task.heartbeat_at), (task.id, Some(cut)));
        let almost = cut + TimeDelta::nanoseconds(i64::from(random.next_in(1, 999)));
        assert_eq!(s.find_stale_claims(almost).unwrap(), [], "{almost}");
        assert_eq!(s.recover_stale_claims(almost, 5).unwrap().reset, [], "{almost}");
        // The microsecond after the last storable one is not a valid threshold.
        let next = cut + TimeDelta::microseconds(1);
        let next_storable = dal_core::validate::time("next", next).is_ok();
        if next_storable {
            let stale = s.find_stale_claims(next).unwrap();
            assert_eq!(stale, [s.get(task.id).unwrap()], "{next}");
        }
        // A cursor under a microsecond after the finish is the finish: the batch reads the task.
        let done = s.complete(&claim.lease).unwrap();
        assert_eq!(done.completed_at, Some(cut));
        if next_storable {
            let after = PruneCursor { completed_at: almost, task_id: Uuid::nil() };
            let pruned = s.prune_finished(next, 10, Some(after)).unwrap();
            assert_eq!(pruned.workflows, [done.workflow_execution_id], "{almost}");
        }
    }
}

fn json_documents_round_trip_exactly_and_only_json_is_stored(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let samples = json!([
        {}, [], null, true, "plain", 0, -1, i64::MIN, u64::MAX, 0.1, 1e300, 5e-324, -2.5e-8,
        123_456_789.123_456_79, {"b": 1, "a": [1, 2, {"c": null}], "é🦀": "ключ", "": ""},
        {"quote": "\"", "backslash": "\\", "newline": "a\nb", "tab": "\t", "control": "\u{1}"},
        {"sql": "'); DROP TABLE task_executions; --", "unicode": "\u{10FFFF}\u{FEFF}"},
        [[[[[[[[["deep"]]]]]]]]]]);
    let mut samples = samples.as_array().unwrap().clone();
    // ~1 MiB of quotes, escapes and four-byte characters, serde_json's edges; 50,000 items.
    let blob = "\"q\" \\ \n🦀é\u{1}".repeat(MIB / 16);
    let (big, tiny) = (f64::MAX, f64::MIN_POSITIVE);
    samples.push(json!({"blob": blob, "max": u64::MAX, "min": i64::MIN, "big": big, "tiny": tiny}));
    samples.push(Value::Array((0..50_000).map(|i| json!(i)).collect()));
    let news = |prefix: &str| -> Vec<NewTaskExecution> {
        let new = |(i, value): (usize, &Value)| {
            NewTaskExecution::new(wf, format!("{prefix}{i}"))
                .with_configuration(value.clone())
                .with_trigger_rules(json!({"type": "Custom", "value": value}))
        };
        samples.iter().enumerate().map(new).collect()
    };
    // In a batch, then one at a time.
    let (many, one) = (news("many"), news("one"));
    let mut rows = s.create_many(&many).unwrap();
    rows.extend(one.iter().map(|new| s.create(new).unwrap()));
    for (row, new) in rows.iter().zip(many.iter().chain(&one)) {
        assert_eq!(row.task_configuration, new.task_configuration);
        assert_eq!(row.trigger_rules, new.trigger_rules);
        assert_eq!(&s.get(row.id).unwrap(), row);
    }
    assert_eq!(s.list_for_workflow(wf).unwrap(), rows);
    // Nor can anyone store text that is not JSON (`jsonb`, `CHECK (json_valid(..))`).
    for text in ["{", "{\"a\": 1", "[1, 2,]", "undefined", "'single'", ""] {
        for column in ["task_configuration", "trigger_rules"] {
            let sql = format!("UPDATE task_executions SET {column} = '{text}'");
            assert!(f.database.execute(&sql).is_err(), "{text:?} was stored");
        }
    }
    assert_eq!(s.list_for_workflow(wf).unwrap(), rows);
}

fn texts_round_trip_verbatim_up_to_their_limits(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    // Text like SQL; a name of 255 four-byte characters (a limit in characters); a message of
    // the largest size.
    let sql = [
        "'); DROP TABLE task_executions; --",
        "Robert'); DELETE FROM task_executions WHERE ('1'='1",
        "$1 ? :name %s %_ \\' \" ` ;",
        "status = 'completed' OR 1=1",
    ];
    let (name, message) = ("🦀".repeat(TASK_NAME_MAX_CHARS), "é".repeat(MESSAGE_MAX_BYTES / 2));
    assert_eq!(message.len(), MESSAGE_MAX_BYTES);
    let texts = sql.map(|text| (text, text)).into_iter().chain([(&*name, &*message)]);
    for (i, (name, message)) in texts.enumerate() {
        let task = task_in(s, wf, name, Running, 2);
        assert_eq!(task.task_name, name);
        let failed = s.mark_failed(task.id, message).unwrap();
        assert_eq!(failed.error_details.as_deref(), Some(message));
        assert_eq!(failed.last_error.as_deref(), Some(message));
        assert_eq!(s.get(task.id).unwrap(), failed);
        assert_eq!(s.list_for_workflow(wf).unwrap().len(), i + 1);
    }
    // An empty reason is a reason, not a missing one.
    let empty = task_in(s, wf, "empty", Ready, 1);
    let skipped = s.mark_skipped(empty.id, "").unwrap();
    assert_eq!(skipped.error_details.as_deref(), Some(""));
    assert_eq!(s.get(empty.id).unwrap(), skipped);
    // A 1 MiB error is refused; sanitized, it is cut at a character boundary and kept.
    let task = ready_tasks(s, workflow(), 1, 1).remove(0);
    let claimed = s.claim_task(task.id, Uuid::now_v7()).unwrap();
    let events = s.events_for_task(task.id).unwrap();
    let too_long = Problem::TooLong { max: MESSAGE_MAX_BYTES, len: MIB, unit: "bytes" };
    invalid(&f, "error", too_long, || s.fail(&claimed.lease, &"x".repeat(MIB)));
    assert_unchanged(s, &claimed.task);
    assert_eq!(s.events_for_task(task.id).unwrap(), events);
    let printed = format!("{}\0", "🦀".repeat(MIB / 4));
    let failed = s.fail(&claimed.lease, &sanitize_message(&printed)).unwrap();
    let cut = "🦀".repeat(MESSAGE_MAX_BYTES / 4);
    assert_eq!(failed.error_details, Some(cut));
    assert_eq!(s.get(failed.id).unwrap(), failed);
}

fn limits_at_their_extremes_and_empty_inputs(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let tasks = ready_tasks(s, wf, 3, 1);
    let runner = Uuid::now_v7();
    // A limit of zero or an empty input sends nothing (the statements group: the others).
    let (_, counts) = f.log.measure(|| {
        assert_eq!(s.list_ready(0).unwrap(), []);
        assert_eq!(s.list_due_retries(0).unwrap(), []);
        assert_eq!(s.deferred_tasks(&[]).unwrap(), []);
    });
    assert_eq!(counts.statements, 0);
    tasks.iter().for_each(|task| assert_unchanged(s, task));
    // The largest limit is no limit.
    assert_eq!(s.list_ready(u32::MAX).unwrap(), tasks);
    assert_eq!(s.list_due_retries(u32::MAX).unwrap(), []);
    let claimed = s.claim_ready(runner, u32::MAX).unwrap();
    assert_eq!(ids(claimed.iter().map(|c| &c.task)), ids(&tasks));
    let events = s.events_for_workflow(wf, None, u32::MAX).unwrap();
    assert_eq!(events.len(), if f.keeps_history() { 6 } else { 0 });
    let from_the_start = s.events_for_workflow(wf, Some(i64::MIN), 2).unwrap();
    assert_eq!(from_the_start, events[..events.len().min(2)]);
    assert_eq!(s.events_for_workflow(wf, Some(i64::MAX), u32::MAX).unwrap(), []);
    // A negative recovery cap is refused; the largest is a cap like any other.
    for cap in [-1, i32::MIN] {
        let problem = Problem::OutOfRange { min: 0, max: i32::MAX.into(), value: cap.into() };
        invalid(&f, "max_recovery_attempts", problem, || s.recover_stale_claims(f.now(), cap));
    }
    claimed.iter().for_each(|c| assert_unchanged(s, &c.task));
    f.clock.advance(TimeDelta::seconds(1));
    let recovery = s.recover_stale_claims(f.now(), i32::MAX).unwrap();
    assert_eq!((recovery.abandoned, ids(&recovery.reset)), (vec![], ids(&tasks)));
    assert!(recovery.reset.iter().all(|t| t.recovery_attempts == 1));
}
