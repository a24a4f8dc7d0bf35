//! The lease-less transitions and the sub-status of a running task: every field each write
//! changes from every status it may start from, and every refusal changing nothing.

use std::fmt::Debug;

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::clock::to_micros;
use dal_core::validate::MESSAGE_MAX_BYTES;
use dal_core::{
    Clock, Completion, EventType, Lease, Problem, SubStatus, TaskExecution, TaskStatus,
};
use serde_json::json;
use uuid::Uuid;

use super::support::{
    assert_unchanged, checked_history, expect_err, ready_tasks, rejected_transition, task_in,
    workflow,
};
use crate::case;
use crate::model::Failure;
use crate::operations::Operation;
use crate::suite::{Backend, Case, Fixture};
use SubStatus::*;
use TaskStatus::*;
use dal_core::Transition::{self, *};

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(every_transition_writes_its_fields_from_every_start),
    case!(refused_transitions_and_sub_statuses_change_nothing),
    case!(unknown_ids_are_not_found_or_match_nothing),
    case!(a_running_task_is_deferred_and_resumed_and_every_way_out_clears_it),
    case!(deferred_tasks_lists_the_deferred_running_tasks_of_the_workflows),
];

/// The error of a call that must fail after sending `statements` statements.
fn failure<T: Debug>(
    f: &Fixture,
    statements: usize,
    call: impl FnOnce() -> dal_core::Result<T>,
) -> Failure {
    let (result, counts) = f.log.measure(call);
    let failure = Failure::from(expect_err(result));
    assert_eq!(counts.statements, statements, "{failure:?}");
    failure
}

/// One transition of each kind.
fn every_transition(retry_at: DateTime<Utc>) -> [Transition; 9] {
    let text = || "ValueError: 'x' — ünïcode 🦀".to_owned();
    [
        MarkReady,
        MarkSkipped { reason: text() },
        MarkRunning,
        MarkCompleted,
        MarkFailed { error: text() },
        MarkAbandoned { reason: text() },
        ScheduleRetry { retry_at },
        ResetForRecovery,
        ResetRetryState,
    ]
}

/// The row `t` writes over `before` at `now`: every field it sets or clears (the sub-status
/// too: only a running task has one).
fn written(t: &Transition, before: &TaskExecution, now: DateTime<Utc>) -> TaskExecution {
    let (before, at) = (before.clone(), Some(now));
    let with =
        |status| TaskExecution { status, sub_status: None, updated_at: now, ..before.clone() };
    let finished = |status| TaskExecution { completed_at: at, ..with(status) };
    let failed = |error: &String| TaskExecution {
        error_details: Some(error.clone()),
        last_error: Some(error.clone()),
        ..finished(Failed)
    };
    // Ready for another attempt: its error and times cleared.
    let requeued = TaskExecution {
        error_details: None,
        started_at: None,
        completed_at: None,
        abandoned_at: None,
        ..with(Ready)
    };
    match t {
        MarkReady => with(Ready),
        MarkSkipped { reason } => {
            TaskExecution { error_details: Some(reason.clone()), ..finished(Skipped) }
        }
        MarkRunning => TaskExecution { started_at: at, ..with(Running) },
        MarkCompleted => finished(Completed),
        MarkFailed { error } => failed(error),
        MarkAbandoned { reason } => TaskExecution { abandoned_at: at, ..failed(reason) },
        // The last error stays visible.
        ScheduleRetry { retry_at } => TaskExecution {
            attempt: before.attempt + 1,
            retry_at: Some(to_micros(*retry_at)),
            ..requeued
        },
        ResetForRecovery => TaskExecution {
            recovery_attempts: before.recovery_attempts + 1,
            last_recovery_at: at,
            started_at: None,
            ..with(Ready)
        },
        // The recovery history is not retry state: it is kept.
        ResetRetryState => {
            TaskExecution { attempt: 1, retry_at: None, last_error: None, ..requeued }
        }
    }
}

fn every_transition_writes_its_fields_from_every_start(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let retry_at = f.clock.now() + TimeDelta::seconds(30) + TimeDelta::nanoseconds(999);
    let [ready, skip, run, done, fail, abandon, retry, recover, reset] =
        &every_transition(retry_at);
    // From NotStarted, each transition from each status it may start from; a running task is
    // deferred first, and every transition out of Running clears its sub-status.
    let chains: [&[&Transition]; 4] = [
        &[
            ready, recover, reset, run, recover, run, fail, retry, fail, reset, run, fail, retry,
            run, retry, recover,
        ],
        &[ready, run, done, reset, skip, reset, abandon, reset, run, abandon],
        &[skip],
        &[abandon],
    ];
    for chain in chains {
        let mut before = task_in(s, workflow(), "t", NotStarted, 3);
        for t in chain {
            if before.status == Running {
                before = s.set_sub_status(before.id, Some(Deferred)).unwrap();
            }
            let now = f.tick();
            let after = s.transition(before.id, (*t).clone()).unwrap();
            let name = format!("{} from {}", t.name(), before.status);
            assert_eq!(after, written(t, &before, now), "{name}");
            assert_eq!(after.is_abandoned(), matches!(t, MarkAbandoned { .. }));
            assert_eq!(s.get(after.id).unwrap(), after, "{name}");
            before = after;
        }
        checked_history(&f, &before);
    }
}

fn refused_transitions_and_sub_statuses_change_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let rejected = rejected_transition(kind);
    // A task in each status, on its last attempt.
    let tasks = TaskStatus::ALL.map(|status| task_in(s, workflow(), "t", status, 1));
    let events = tasks.each_ref().map(|t| s.events_for_task(t.id).unwrap());
    let mut refused = 0;
    for t in every_transition(f.now()) {
        let plan = t.plan(f.now());
        for task in &tasks {
            let want = if !plan.guard.from.contains(task.status) {
                Failure::InvalidTransition(task.id, task.status, plan.effects.status)
            } else if matches!(t, ScheduleRetry { .. }) {
                Failure::RetriesExhausted(task.id, 1, 1)
            } else {
                continue;
            };
            f.tick();
            let got = failure(&f, rejected, || s.transition(task.id, t.clone()));
            assert_eq!(got, want, "{} from {}", t.name(), task.status);
            refused += 1;
        }
    }
    // 9 transitions x 6 statuses, less the 18 legal starts; and 2 retries with no attempt left.
    assert_eq!(refused, 38);
    for task in tasks.iter().filter(|t| t.status != Running) {
        for sub in [Some(Deferred), Some(Active), None] {
            let got = failure(&f, rejected, || s.set_sub_status(task.id, sub));
            let want = Failure::InvalidTransition(task.id, task.status, Running);
            assert_eq!(got, want);
        }
    }
    // Bad arguments, from every status allowed: refused before anything is sent.
    let fail = |e: &str| MarkFailed { error: e.into() };
    let skip = |r: &str| MarkSkipped { reason: r.into() };
    let abandon = |r: &str| MarkAbandoned { reason: r.into() };
    let (long, mib) = ("e".repeat(MESSAGE_MAX_BYTES + 1), "x".repeat(1 << 20));
    let too_long =
        |text: &str| Problem::TooLong { max: MESSAGE_MAX_BYTES, len: text.len(), unit: "bytes" };
    let retry_at = DateTime::from_timestamp(253_402_300_800, 0).unwrap(); // year 10000
    for (t, field, problem) in [
        (fail("\0"), "error", Problem::ContainsNul),
        (fail(&long), "error", too_long(&long)),
        (fail(&mib), "error", too_long(&mib)),
        (skip("a\0"), "reason", Problem::ContainsNul),
        (skip(&mib), "reason", too_long(&mib)),
        (abandon("\0b"), "reason", Problem::ContainsNul),
        (abandon(&mib), "reason", too_long(&mib)),
        (ScheduleRetry { retry_at }, "retry_at", Problem::TimeOutOfRange),
    ] {
        let from = t.plan(f.now()).guard.from;
        for task in tasks.iter().filter(|task| from.contains(task.status)) {
            let got = failure(&f, 0, || s.transition(task.id, t.clone()));
            assert_eq!(got, Failure::Validation(field.into(), problem.clone()));
        }
    }
    for (task, events) in tasks.iter().zip(events) {
        assert_unchanged(s, task);
        assert_eq!(s.events_for_task(task.id).unwrap(), events);
    }
}

fn unknown_ids_are_not_found_or_match_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let task = task_in(s, workflow(), "known", Running, 1);
    let (nobody, rejected) = (Uuid::now_v7(), rejected_transition(kind));
    for t in every_transition(f.now()) {
        let got = failure(&f, rejected, || s.transition(nobody, t));
        assert_eq!(got, Failure::NotFound(nobody));
    }
    let got = failure(&f, rejected, || s.set_sub_status(nobody, None));
    assert_eq!(got, Failure::NotFound(nobody));
    let lease = Lease { task_id: nobody, runner_id: Uuid::now_v7(), claim: 1 };
    // The nil id and the largest id are ids like any other.
    for (id, result) in [
        (nobody, s.heartbeat(&lease)),
        (nobody, s.complete(&lease)),
        (nobody, s.fail(&lease, "boom")),
        (nobody, s.release(&lease)),
        (nobody, s.get(nobody)),
        (Uuid::nil(), s.get(Uuid::nil())),
        (Uuid::max(), s.get(Uuid::max())),
    ] {
        assert_eq!(Failure::from(expect_err(result)), Failure::NotFound(id));
    }
    // A batch of unknown leases completes nothing and reports each as lost.
    let lost = Completion { completed: vec![], lost: vec![lease] };
    assert_eq!(s.complete_many(&[lease]).unwrap(), lost);
    assert_eq!(s.events_for_task(nobody).unwrap(), []);
    assert_eq!(s.list_for_workflow(nobody).unwrap(), []);
    assert_eq!(s.events_for_workflow(nobody, None, 10).unwrap(), []);
    assert_unchanged(s, &task);
}

fn a_running_task_is_deferred_and_resumed_and_every_way_out_clears_it(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let runner = Uuid::now_v7();
    let claimed = || {
        let task = ready_tasks(s, workflow(), 1, 3).remove(0);
        s.claim_task(task.id, runner).unwrap()
    };
    // Set and cleared, each with its event; status, claim and heartbeat are left as they are.
    let first = claimed();
    let mut row = first.task.clone();
    for (sub, event_type, data) in [
        (Some(Deferred), EventType::Deferred, json!("deferred")),
        (Some(Active), EventType::Resumed, json!("active")),
        (Some(Deferred), EventType::Deferred, json!("deferred")),
        (None, EventType::Resumed, json!(null)),
        (Some(Deferred), EventType::Deferred, json!("deferred")),
    ] {
        let now = f.tick();
        let (set, counts) = f.log.measure(|| s.set_sub_status(row.id, sub).unwrap());
        assert_eq!(counts.statements, kind.statements(Operation::SetSubStatus));
        row = TaskExecution { sub_status: sub, updated_at: now, ..row };
        assert_eq!(set, row);
        assert_eq!(s.get(row.id).unwrap(), row);
        if let Some(event) = checked_history(&f, &row).last() {
            let got = (event.event_type, event.runner_id, event.created_at);
            assert_eq!(got, (event_type, None, now));
            let data =
                json!({"sub_status": data, "attempt": 1, "claim": 1, "recovery_attempts": 0});
            assert_eq!(event.event_data, data);
        }
    }
    let beat = f.tick();
    let alive = s.heartbeat(&first.lease).unwrap();
    assert_eq!((alive.heartbeat_at, alive.sub_status), (Some(beat), Some(Deferred)));
    // The writes under a lease that leave Running clear it (the transitions: see above).
    let [a, b, c, d] = [(); 4].map(|()| {
        let deferred = claimed();
        s.set_sub_status(deferred.task.id, Some(Deferred)).unwrap();
        deferred.lease
    });
    let rows = [
        s.complete(&a).unwrap(),
        s.fail(&b, "e").unwrap(),
        s.release(&c).unwrap(),
        s.complete_many(&[d]).unwrap().completed.remove(0),
    ];
    for (row, status) in rows.iter().zip([Completed, Failed, Ready, Completed]) {
        assert_eq!((row.status, row.sub_status), (status, None));
        assert_eq!(&s.get(row.id).unwrap(), row);
    }
    // The first task's runner died: the sweep resets it, and the sub-status goes.
    f.clock.advance(TimeDelta::minutes(1));
    let stale = f.now() - TimeDelta::seconds(30);
    let reset = s.recover_stale_claims(stale, 3).unwrap().reset;
    let reset: Vec<_> = reset.iter().map(|t| (t.id, t.status, t.sub_status)).collect();
    assert_eq!(reset, [(first.task.id, Ready, None)]);
}

fn deferred_tasks_lists_the_deferred_running_tasks_of_the_workflows(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let (wf, other) = (workflow(), workflow());
    let running = |wf, name: &str, sub| {
        let task = task_in(s, wf, name, Running, 1);
        s.set_sub_status(task.id, sub).unwrap()
    };
    let mut deferred: Vec<_> = [(wf, "a"), (wf, "b"), (other, "c")]
        .map(|(wf, name)| running(wf, name, Some(Deferred)))
        .into();
    running(workflow(), "elsewhere", Some(Deferred));
    running(wf, "active", Some(Active));
    running(wf, "running", None);
    task_in(s, wf, "ready", Ready, 1);
    let (found, counts) = f.log.measure(|| s.deferred_tasks(&[wf, other, Uuid::now_v7()]).unwrap());
    assert_eq!(counts.statements, kind.statements(Operation::DeferredTasks));
    deferred.sort_by_key(|t| t.id);
    assert_eq!(found, deferred);
}
