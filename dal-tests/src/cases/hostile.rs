//! Hostile and bad input: megabyte strings and documents, limits at their extremes, times at
//! the edges of what can be stored, ids nobody created. Every rejection is the same typed error
//! on each backend, is made before anything reaches the database, and leaves rows as they were.

use chrono::{DateTime, Utc};
use dal_core::validate::{MESSAGE_MAX_BYTES, TASK_NAME_MAX_CHARS, sanitize_message};
use dal_core::{Completion, DalError, Lease, NewTaskExecution, Problem, TaskStatus};
use serde_json::{Value, json};
use uuid::Uuid;

use super::support::{assert_unchanged, expect_err, ready_tasks, task_in, workflow};
use crate::case;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::Fixture;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(megabyte_texts_are_rejected_with_their_size_and_write_nothing),
    case!(megabyte_json_documents_round_trip),
    case!(json_that_is_not_valid_cannot_reach_a_row),
    case!(limits_at_their_extremes),
    case!(times_at_and_past_the_storable_edges),
    case!(unknown_ids_are_not_found_or_match_nothing),
];

/// One mebibyte.
const MIB: usize = 1 << 20;

/// Asserts that `err` is a validation error of `field` with `problem`.
fn assert_invalid(err: &DalError, field: &str, problem: &Problem) {
    assert!(
        matches!(err, DalError::Validation(v) if v.field == field && &v.problem == problem),
        "{field}: {err:?}"
    );
}

fn megabyte_texts_are_rejected_with_their_size_and_write_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    // 1 MiB of four-byte characters: the name limit counts characters.
    let name = "🦀".repeat(MIB / 4);
    let too_long_name = Problem::TooLong {
        max: TASK_NAME_MAX_CHARS,
        len: MIB / 4,
        unit: "characters",
    };
    let (result, counts) = f
        .log
        .measure(|| f.store.create(&NewTaskExecution::new(wf, name.clone())));
    assert_invalid(&expect_err(result), "task_name", &too_long_name);
    assert_eq!(counts.statements, 0);
    let (result, counts) = f.log.measure(|| {
        f.store
            .create_many(&[NewTaskExecution::new(wf, name.clone())])
    });
    assert_invalid(&expect_err(result), "tasks[0].task_name", &too_long_name);
    assert_eq!(counts.statements, 0);
    assert_eq!(f.store.list_for_workflow(wf).unwrap(), vec![]);

    // A 1 MiB message, through each call that takes one.
    let message = "x".repeat(MIB);
    let too_long_message = Problem::TooLong {
        max: MESSAGE_MAX_BYTES,
        len: MIB,
        unit: "bytes",
    };
    let running = task_in(f.store(), wf, "running", TaskStatus::Running, 3);
    let ready = task_in(f.store(), wf, "ready", TaskStatus::Ready, 3);
    let events = f.store.events_for_workflow(wf, None, 1_000).unwrap();
    let (result, counts) = f.log.measure(|| f.store.mark_failed(running.id, &message));
    assert_invalid(&expect_err(result), "error", &too_long_message);
    assert_eq!(counts.statements, 0);
    let (result, counts) = f.log.measure(|| f.store.mark_skipped(ready.id, &message));
    assert_invalid(&expect_err(result), "reason", &too_long_message);
    assert_eq!(counts.statements, 0);
    let (result, counts) = f
        .log
        .measure(|| f.store.mark_abandoned(running.id, &message));
    assert_invalid(&expect_err(result), "reason", &too_long_message);
    assert_eq!(counts.statements, 0);
    let claimed = f.store.claim_ready(Uuid::now_v7(), 1).unwrap().remove(0);
    let (result, counts) = f.log.measure(|| f.store.fail(&claimed.lease, &message));
    assert_invalid(&expect_err(result), "error", &too_long_message);
    assert_eq!(counts.statements, 0);
    assert_unchanged(f.store(), &running);
    assert_unchanged(f.store(), &claimed.task);
    // Only the claim's event was added (none with the history off).
    let after = f.store.events_for_workflow(wf, None, 1_000).unwrap();
    assert_eq!(after[..events.len()], events[..]);
    assert_eq!(after.len(), events.len() + usize::from(f.keeps_history()));

    // What a task printed can always be kept: sanitized, it is cut at a character boundary.
    let printed = format!("{}\0", "🦀".repeat(MIB / 4));
    let kept = sanitize_message(&printed);
    let failed = f.store.fail(&claimed.lease, &kept).unwrap();
    let details = failed.error_details.clone().unwrap();
    assert_eq!(details.len(), MESSAGE_MAX_BYTES);
    assert_eq!(details, "🦀".repeat(MESSAGE_MAX_BYTES / 4));
    assert_eq!(f.store.get(failed.id).unwrap(), failed);
}

fn megabyte_json_documents_round_trip(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    // About 1 MiB of text with quotes, escapes and four-byte characters, and numbers at the
    // edges of what serde_json holds.
    let blob = "\"q\" \\ \n🦀é\u{1}".repeat(MIB / 16);
    let config = json!({
        "blob": blob,
        "max": u64::MAX,
        "min": i64::MIN,
        "big": f64::MAX,
        "tiny": f64::MIN_POSITIVE,
    });
    let rules = Value::Array((0..50_000).map(|i| json!(i)).collect());
    let new = |name: &str| {
        NewTaskExecution::new(wf, name)
            .with_configuration(config.clone())
            .with_trigger_rules(rules.clone())
    };
    let one = f.store.create(&new("one")).unwrap();
    assert_eq!(one.task_configuration, config);
    assert_eq!(one.trigger_rules, rules);
    let many = f.store.create_many(&[new("two"), new("three")]).unwrap();
    for row in &many {
        assert_eq!(row.task_configuration, config);
        assert_eq!(row.trigger_rules, rules);
    }
    let mut all = vec![one];
    all.extend(many);
    for row in &all {
        assert_eq!(&f.store.get(row.id).unwrap(), row);
    }
    assert_eq!(f.store.list_for_workflow(wf).unwrap(), all);
}

fn json_that_is_not_valid_cannot_reach_a_row(kind: Backend) {
    // The API takes `serde_json::Value`, so the store never sends text that is not JSON. The
    // schema also refuses it from anyone else: `jsonb` on PostgreSQL, `CHECK (json_valid(..))`
    // on SQLite. So reads never meet a document they cannot parse.
    let f = Fixture::new(kind);
    let task = task_in(f.store(), workflow(), "t", TaskStatus::Ready, 1);
    for text in ["{", "{\"a\": 1", "[1, 2,]", "undefined", "'single'", ""] {
        let sql = format!("UPDATE task_executions SET task_configuration = '{text}'");
        assert!(f.database.execute(&sql).is_err(), "{text:?} was stored");
        let sql = format!("UPDATE task_executions SET trigger_rules = '{text}'");
        assert!(f.database.execute(&sql).is_err(), "{text:?} was stored");
    }
    assert_unchanged(f.store(), &task);
}

fn limits_at_their_extremes(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let tasks = ready_tasks(f.store(), wf, 3, 1);
    let runner = Uuid::now_v7();
    // A limit of zero asks for nothing, and nothing is sent.
    let (claimed, counts) = f.log.measure(|| f.store.claim_ready(runner, 0));
    assert_eq!(claimed.unwrap(), vec![]);
    assert_eq!(counts.statements, 0);
    let (listed, counts) = f.log.measure(|| f.store.list_ready(0));
    assert_eq!(listed.unwrap(), vec![]);
    assert_eq!(counts.statements, 0);
    let (listed, counts) = f.log.measure(|| f.store.list_due_retries(0));
    assert_eq!(listed.unwrap(), vec![]);
    assert_eq!(counts.statements, 0);
    let (events, counts) = f.log.measure(|| f.store.events_for_workflow(wf, None, 0));
    assert_eq!(events.unwrap(), vec![]);
    assert_eq!(counts.statements, 0);
    for task in &tasks {
        assert_unchanged(f.store(), task);
    }
    // The largest limit is no limit.
    assert_eq!(f.store.list_ready(u32::MAX).unwrap(), tasks);
    assert_eq!(f.store.list_due_retries(u32::MAX).unwrap(), vec![]);
    let claimed = f.store.claim_ready(runner, u32::MAX).unwrap();
    let claimed_ids: Vec<Uuid> = claimed.iter().map(|c| c.task.id).collect();
    let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
    assert_eq!(claimed_ids, ids);
    let events = f.store.events_for_workflow(wf, None, u32::MAX).unwrap();
    assert_eq!(events.len(), if f.keeps_history() { 6 } else { 0 });
    assert_eq!(
        f.store.events_for_workflow(wf, Some(i64::MIN), 2).unwrap(),
        events[..events.len().min(2)]
    );
    assert_eq!(
        f.store
            .events_for_workflow(wf, Some(i64::MAX), u32::MAX)
            .unwrap(),
        vec![]
    );
    // A negative recovery cap, or a negative or zero attempt count, is refused.
    let after = f.now();
    for cap in [-1, i32::MIN] {
        let (result, counts) = f.log.measure(|| f.store.recover_stale_claims(after, cap));
        assert_invalid(
            &expect_err(result),
            "max_recovery_attempts",
            &Problem::OutOfRange {
                min: 0,
                max: i32::MAX.into(),
                value: cap.into(),
            },
        );
        assert_eq!(counts.statements, 0);
    }
    for c in &claimed {
        assert_unchanged(f.store(), &c.task);
    }
    for attempts in [0, -1, i32::MIN] {
        let err = expect_err(
            f.store
                .create(&NewTaskExecution::new(wf, "n").with_max_attempts(attempts)),
        );
        assert_invalid(
            &err,
            "max_attempts",
            &Problem::OutOfRange {
                min: 1,
                max: i32::MAX.into(),
                value: attempts.into(),
            },
        );
    }
    // The largest cap and attempt count are values like any other.
    f.clock.advance(chrono::TimeDelta::seconds(1));
    let recovery = f.store.recover_stale_claims(f.now(), i32::MAX).unwrap();
    assert_eq!(recovery.abandoned, vec![]);
    assert_eq!(recovery.reset.iter().map(|t| t.id).collect::<Vec<_>>(), ids);
    assert!(recovery.reset.iter().all(|t| t.recovery_attempts == 1));
    let most = f
        .store
        .create(&NewTaskExecution::new(wf, "most").with_max_attempts(i32::MAX))
        .unwrap();
    assert_eq!(most.max_attempts, i32::MAX);
    assert_eq!(f.store.get(most.id).unwrap(), most);
}

fn times_at_and_past_the_storable_edges(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let first = "0001-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
    let last = "9999-12-31T23:59:59.999999Z"
        .parse::<DateTime<Utc>>()
        .unwrap();
    let before_first = first - chrono::TimeDelta::microseconds(1);
    let after_last = last + chrono::TimeDelta::microseconds(1);
    ready_tasks(f.store(), wf, 2, 2);
    let claimed = f.store.claim_ready(Uuid::now_v7(), 2).unwrap();
    // Thresholds at the edges: nothing is older than the first time, everything than the last.
    assert_eq!(f.store.find_stale_claims(first).unwrap(), vec![]);
    let stale: Vec<Uuid> = f
        .store
        .find_stale_claims(last)
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    let ids: Vec<Uuid> = claimed.iter().map(|c| c.task.id).collect();
    assert_eq!(stale, ids);
    // Past the edges, or at chrono's own limits: refused, nothing sent, nothing changed.
    for at in [
        before_first,
        after_last,
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
    ] {
        let (result, counts) = f.log.measure(|| f.store.find_stale_claims(at));
        assert_invalid(&expect_err(result), "older_than", &Problem::TimeOutOfRange);
        let (recovered, more) = f.log.measure(|| f.store.recover_stale_claims(at, 1));
        assert_invalid(
            &expect_err(recovered),
            "older_than",
            &Problem::TimeOutOfRange,
        );
        let (retried, retry_counts) = f
            .log
            .measure(|| f.store.schedule_retry(claimed[0].task.id, at));
        assert_invalid(&expect_err(retried), "retry_at", &Problem::TimeOutOfRange);
        let (created, create_counts) = f.log.measure(|| {
            f.store.create(&NewTaskExecution {
                retry_at: Some(at),
                ..NewTaskExecution::new(wf, "edge")
            })
        });
        assert_invalid(&expect_err(created), "retry_at", &Problem::TimeOutOfRange);
        assert_eq!(
            counts.statements
                + more.statements
                + retry_counts.statements
                + create_counts.statements,
            0
        );
    }
    for c in &claimed {
        assert_unchanged(f.store(), &c.task);
    }
    // A retry due at the first storable time is due now; one at the last is never listed.
    let soon = f.store.schedule_retry(claimed[0].task.id, first).unwrap();
    let never = f.store.schedule_retry(claimed[1].task.id, last).unwrap();
    assert_eq!(f.store.list_due_retries(10).unwrap(), vec![soon.clone()]);
    assert_eq!(f.store.list_ready(10).unwrap(), vec![soon]);
    assert_eq!(never.retry_at, Some(last));
}

fn unknown_ids_are_not_found_or_match_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let task = task_in(f.store(), wf, "known", TaskStatus::Running, 1);
    let nobody = Uuid::now_v7();
    let lease = Lease {
        task_id: nobody,
        runner_id: Uuid::now_v7(),
        claim: 1,
    };
    let not_found = |err: DalError| {
        assert!(
            matches!(err, DalError::NotFound { id } if id == nobody),
            "{err:?}"
        );
    };
    not_found(expect_err(f.store.heartbeat(&lease)));
    not_found(expect_err(f.store.complete(&lease)));
    not_found(expect_err(f.store.fail(&lease, "boom")));
    not_found(expect_err(f.store.release(&lease)));
    not_found(expect_err(f.store.reset_task_for_recovery(nobody)));
    // A batch of unknown leases completes nothing and reports each as lost.
    assert_eq!(
        f.store.complete_many(&[lease]).unwrap(),
        Completion {
            completed: vec![],
            lost: vec![lease],
        }
    );
    // Reads of unknown ids find nothing.
    assert_eq!(f.store.events_for_task(nobody).unwrap(), vec![]);
    assert_eq!(f.store.list_for_workflow(nobody).unwrap(), vec![]);
    assert_eq!(
        f.store.events_for_workflow(nobody, None, 10).unwrap(),
        vec![]
    );
    // The nil id and the largest id are ids like any other.
    for id in [Uuid::nil(), Uuid::max()] {
        let err = expect_err(f.store.get(id));
        assert!(
            matches!(err, DalError::NotFound { id: found } if found == id),
            "{err:?}"
        );
    }
    assert_unchanged(f.store(), &task);
}
