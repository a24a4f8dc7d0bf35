//! Every transition: its happy paths (every field that must change and every one that must
//! not), every illegal start, unknown ids, and rejected arguments.

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::Clock;
use dal_core::clock::to_micros;
use dal_core::{DalError, Problem, TaskExecution, TaskStatus, Transition};

use super::support::rejected_transition;
use super::support::{assert_unchanged, expect_err, task_in, workflow};
use crate::case;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::Fixture;
use TaskStatus::*;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(mark_ready_changes_only_the_status),
    case!(mark_skipped_keeps_the_reason),
    case!(mark_running_sets_started_at),
    case!(mark_completed_sets_completed_at),
    case!(mark_failed_keeps_the_error),
    case!(mark_abandoned_is_recognisable),
    case!(schedule_retry_counts_an_attempt_and_keeps_the_last_error),
    case!(schedule_retry_stops_when_attempts_are_exhausted),
    case!(reset_for_recovery_adds_exactly_one_each_time),
    case!(reset_retry_state_starts_over),
    case!(illegal_transitions_from_every_status_change_nothing),
    case!(transitions_of_an_unknown_id_are_not_found),
    case!(rejected_arguments_write_nothing),
];

/// One transition of each kind, with arguments.
pub fn every_transition(retry_at: DateTime<Utc>) -> Vec<Transition> {
    vec![
        Transition::MarkReady,
        Transition::MarkSkipped {
            reason: "upstream skipped".into(),
        },
        Transition::MarkRunning,
        Transition::MarkCompleted,
        Transition::MarkFailed {
            error: "exit code 3".into(),
        },
        Transition::MarkAbandoned {
            reason: "runner lost".into(),
        },
        Transition::ScheduleRetry { retry_at },
        Transition::ResetForRecovery,
        Transition::ResetRetryState,
    ]
}

fn mark_ready_changes_only_the_status(kind: Backend) {
    let f = Fixture::new(kind);
    let before = task_in(f.store(), workflow(), "t", NotStarted, 1);
    let now = f.tick();
    let after = f.store.mark_ready(before.id).unwrap();
    assert_eq!(
        after,
        TaskExecution {
            status: Ready,
            updated_at: now,
            ..before
        }
    );
    assert_eq!(f.store.get(after.id).unwrap(), after);
}

fn mark_skipped_keeps_the_reason(kind: Backend) {
    let f = Fixture::new(kind);
    for from in [NotStarted, Ready] {
        let before = task_in(f.store(), workflow(), "t", from, 2);
        let now = f.tick();
        let after = f
            .store
            .mark_skipped(before.id, "trigger rule: none of [a] completed")
            .unwrap();
        assert_eq!(
            after,
            TaskExecution {
                status: Skipped,
                error_details: Some("trigger rule: none of [a] completed".into()),
                completed_at: Some(now),
                updated_at: now,
                ..before
            }
        );
        assert_eq!(f.store.get(after.id).unwrap(), after);
    }
}

fn mark_running_sets_started_at(kind: Backend) {
    let f = Fixture::new(kind);
    let before = task_in(f.store(), workflow(), "t", Ready, 3);
    let now = f.tick();
    let after = f.store.mark_running(before.id).unwrap();
    assert_eq!(
        after,
        TaskExecution {
            status: Running,
            started_at: Some(now),
            updated_at: now,
            ..before
        }
    );
    assert_eq!(f.store.get(after.id).unwrap(), after);
}

fn mark_completed_sets_completed_at(kind: Backend) {
    let f = Fixture::new(kind);
    let before = task_in(f.store(), workflow(), "t", Running, 3);
    let now = f.tick();
    let after = f.store.mark_completed(before.id).unwrap();
    assert_eq!(
        after,
        TaskExecution {
            status: Completed,
            completed_at: Some(now),
            updated_at: now,
            ..before
        }
    );
    assert_eq!(f.store.get(after.id).unwrap(), after);
}

fn mark_failed_keeps_the_error(kind: Backend) {
    let f = Fixture::new(kind);
    for from in [Ready, Running] {
        let before = task_in(f.store(), workflow(), "t", from, 3);
        let now = f.tick();
        let after = f
            .store
            .mark_failed(before.id, "ValueError: 'x' — ünïcode 🦀")
            .unwrap();
        assert_eq!(
            after,
            TaskExecution {
                status: Failed,
                error_details: Some("ValueError: 'x' — ünïcode 🦀".into()),
                last_error: Some("ValueError: 'x' — ünïcode 🦀".into()),
                completed_at: Some(now),
                updated_at: now,
                ..before
            }
        );
        assert!(!after.is_abandoned());
        assert_eq!(f.store.get(after.id).unwrap(), after);
    }
}

fn mark_abandoned_is_recognisable(kind: Backend) {
    let f = Fixture::new(kind);
    for from in [NotStarted, Ready, Running] {
        let before = task_in(f.store(), workflow(), "t", from, 3);
        let now = f.tick();
        let after = f
            .store
            .mark_abandoned(before.id, "exceeded 5 recoveries")
            .unwrap();
        assert_eq!(
            after,
            TaskExecution {
                status: Failed,
                error_details: Some("exceeded 5 recoveries".into()),
                last_error: Some("exceeded 5 recoveries".into()),
                completed_at: Some(now),
                abandoned_at: Some(now),
                updated_at: now,
                ..before
            }
        );
        assert!(after.is_abandoned());
        assert_eq!(f.store.get(after.id).unwrap(), after);
    }
}

fn schedule_retry_counts_an_attempt_and_keeps_the_last_error(kind: Backend) {
    let f = Fixture::new(kind);
    for from in [Running, Failed] {
        let before = task_in(f.store(), workflow(), "t", from, 3);
        let now = f.tick();
        let retry_at = f.clock.now() + TimeDelta::seconds(30) + TimeDelta::nanoseconds(999);
        let after = f.store.schedule_retry(before.id, retry_at).unwrap();
        assert_eq!(
            after,
            TaskExecution {
                status: Ready,
                attempt: 2,
                retry_at: Some(to_micros(retry_at)),
                error_details: None,
                started_at: None,
                completed_at: None,
                updated_at: now,
                ..before.clone()
            }
        );
        // The error that caused the retry stays visible.
        assert_eq!(after.last_error, before.last_error);
        assert_eq!(f.store.get(after.id).unwrap(), after);
    }
}

fn schedule_retry_stops_when_attempts_are_exhausted(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let task = task_in(s, workflow(), "t", Running, 3);
    let mut attempts = vec![task.attempt];
    for _ in 0..2 {
        let retried = s.schedule_retry(task.id, f.tick()).unwrap();
        attempts.push(retried.attempt);
        s.mark_running(task.id).unwrap();
        s.mark_failed(task.id, "again").unwrap();
    }
    assert_eq!(attempts, [1, 2, 3]);
    let before = s.get(task.id).unwrap();
    assert_eq!((before.status, before.attempt), (Failed, 3));
    f.tick();
    let (result, counts) = f.log.measure(|| s.schedule_retry(task.id, f.now()));
    let err = expect_err(result);
    assert!(
        matches!(err, DalError::RetriesExhausted { id, attempt: 3, max_attempts: 3 } if id == task.id),
        "{err:?}"
    );
    assert_unchanged(s, &before);
    assert_eq!(counts.statements, rejected_transition(kind));
}

fn reset_for_recovery_adds_exactly_one_each_time(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let mut before = task_in(s, workflow(), "t", Running, 2);
    for n in 1..=5 {
        let now = f.tick();
        let after = s.reset_task_for_recovery(before.id).unwrap();
        assert_eq!(
            after,
            TaskExecution {
                status: Ready,
                recovery_attempts: n,
                last_recovery_at: Some(now),
                started_at: None,
                updated_at: now,
                ..before.clone()
            }
        );
        // Running again before the next reset half of the time: both starts are allowed.
        before = if n % 2 == 0 {
            s.mark_running(after.id).unwrap()
        } else {
            after
        };
    }
    assert_eq!(s.get(before.id).unwrap().recovery_attempts, 5);
}

fn reset_retry_state_starts_over(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    for from in [Ready, Completed, Failed, Skipped] {
        let task = task_in(s, workflow(), "t", Running, 4);
        // Give it some history: a failure, a retry, a recovery.
        s.mark_failed(task.id, "first").unwrap();
        s.schedule_retry(task.id, f.tick()).unwrap();
        s.reset_task_for_recovery(task.id).unwrap();
        match from {
            Ready => {}
            Completed => {
                s.mark_running(task.id).unwrap();
                s.mark_completed(task.id).unwrap();
            }
            Failed => {
                s.mark_abandoned(task.id, "gave up").unwrap();
            }
            Skipped => {
                s.mark_skipped(task.id, "not needed").unwrap();
            }
            _ => unreachable!(),
        }
        let before = s.get(task.id).unwrap();
        assert_eq!(before.status, from);
        let now = f.tick();
        let after = s.reset_retry_state(task.id).unwrap();
        assert_eq!(
            after,
            TaskExecution {
                status: Ready,
                attempt: 1,
                retry_at: None,
                error_details: None,
                last_error: None,
                started_at: None,
                completed_at: None,
                abandoned_at: None,
                updated_at: now,
                ..before.clone()
            }
        );
        // Recovery history is not retry state: it is kept.
        assert_eq!(after.recovery_attempts, 1);
        assert_eq!(after.last_recovery_at, before.last_recovery_at);
    }
}

fn illegal_transitions_from_every_status_change_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let mut checked = 0;
    for transition in every_transition(f.now()) {
        for status in TaskStatus::ALL {
            if transition.plan(f.now()).guard.from.contains(status) {
                continue;
            }
            let before = task_in(s, workflow(), "t", status, 3);
            f.tick();
            let (result, counts) = f
                .log
                .measure(|| s.transition(before.id, transition.clone()));
            let err = expect_err(result);
            assert!(
                matches!(err, DalError::InvalidTransition { id, from, to }
                    if id == before.id && from == status && to == transition.plan(f.now()).effects.status),
                "{} from {status}: {err:?}",
                transition.name()
            );
            assert_unchanged(s, &before);
            assert_eq!(
                counts.statements,
                rejected_transition(kind),
                "{} from {status}",
                transition.name()
            );
            checked += 1;
        }
    }
    // 9 transitions x 6 statuses, less the 18 legal starts.
    assert_eq!(checked, 36);
}

fn transitions_of_an_unknown_id_are_not_found(kind: Backend) {
    let f = Fixture::new(kind);
    let id = uuid::Uuid::now_v7();
    for transition in every_transition(f.now()) {
        let name = transition.name();
        let (result, counts) = f.log.measure(|| f.store.transition(id, transition));
        let err = expect_err(result);
        assert!(
            matches!(err, DalError::NotFound { id: found } if found == id),
            "{name}: {err:?}"
        );
        assert_eq!(counts.statements, rejected_transition(kind), "{name}");
    }
}

fn rejected_arguments_write_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let running = task_in(s, workflow(), "t", Running, 3);
    let ready = task_in(s, workflow(), "u", Ready, 3);
    let long = "e".repeat(dal_core::validate::MESSAGE_MAX_BYTES + 1);
    let year_10000 = DateTime::from_timestamp(253_402_300_800, 0).unwrap();
    let cases: Vec<(&TaskExecution, Transition, &str, Problem)> = vec![
        (
            &running,
            Transition::MarkFailed {
                error: "bad\0byte".into(),
            },
            "error",
            Problem::ContainsNul,
        ),
        (
            &running,
            Transition::MarkFailed {
                error: long.clone(),
            },
            "error",
            Problem::TooLong {
                max: long.len() - 1,
                len: long.len(),
                unit: "bytes",
            },
        ),
        (
            &ready,
            Transition::MarkSkipped {
                reason: "\0".into(),
            },
            "reason",
            Problem::ContainsNul,
        ),
        (
            &running,
            Transition::MarkAbandoned {
                reason: "x\0".into(),
            },
            "reason",
            Problem::ContainsNul,
        ),
        (
            &running,
            Transition::ScheduleRetry {
                retry_at: year_10000,
            },
            "retry_at",
            Problem::TimeOutOfRange,
        ),
    ];
    for (task, transition, field, problem) in cases {
        let name = transition.name();
        let (result, counts) = f.log.measure(|| s.transition(task.id, transition));
        let err = expect_err(result);
        assert!(
            matches!(&err, DalError::Validation(v) if v.field == field && v.problem == problem),
            "{name}: {err:?}"
        );
        assert_eq!(counts.statements, 0, "{name} reached the database");
        assert_unchanged(s, task);
    }
}
