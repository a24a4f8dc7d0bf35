//! The lease-less transitions and the sub-status: every field each write changes from every
//! status it may start from (the model's rows), and every refusal changing nothing.

use super::model_based::{Op, Op::*, scenario, spec};
use super::support::{assert_unchanged, fails, fails_after, task_in};
use super::support::{under_lease, workflow};
use crate::case;
use crate::model::Failure;
use crate::operations::Operation::RejectedTransition;
use crate::suite::{Backend, Case, Fixture};
use TaskStatus::*;
use chrono::{DateTime, TimeDelta};
use dal_core::Transition::{self, *};
use dal_core::validate::MESSAGE_MAX_BYTES;
use dal_core::{Completion, Lease, NewTaskExecution, Problem, SubStatus::*, TaskStatus};
use uuid::Uuid;

pub const CASES: &[Case] = &[
    case!(every_transition_writes_its_fields_from_every_start),
    case!(refused_transitions_and_sub_statuses_change_nothing),
    case!(unknown_ids_are_not_found_or_match_nothing),
    case!(a_running_task_is_deferred_and_resumed_and_every_way_out_clears_it),
    case!(deferred_tasks_lists_the_deferred_running_tasks_of_the_workflows),
];

/// One transition of each kind.
#[rustfmt::skip]
fn every_transition(retry_at: DateTime<chrono::Utc>) -> [Transition; 9] {
    let text = || "ValueError: 'x' — ünïcode 🦀".to_owned();
    [
        MarkReady, MarkSkipped { reason: text() }, MarkRunning, MarkCompleted,
        MarkFailed { error: text() }, MarkAbandoned { reason: text() }, ScheduleRetry { retry_at },
        ResetForRecovery, ResetRetryState,
    ]
}

/// Each transition (0 ready, 1 skip, 2 run, 3 complete, 4 fail, 5 abandon, 6 retry, 7 recover,
/// 8 reset) from each status it may start from, a second apart; a running task deferred first
/// (every way out of `Running` clears it).
fn every_transition_writes_its_fields_from_every_start(kind: Backend) {
    let chains: [&[u8]; 4] = [
        &[0, 7, 8, 2, 7, 2, 4, 6, 4, 8, 2, 4, 6, 2, 6, 7],
        &[0, 2, 3, 8, 1, 8, 5, 8, 2, 5],
        &[1],
        &[5],
    ];
    let mut ops = vec![];
    for (task, chain) in chains.iter().enumerate() {
        ops.push(Create(spec(0, task as u8, false, 3)));
        for (i, &t) in chain.iter().enumerate() {
            if i > 0 && chain[i - 1] == 2 {
                ops.push(SubStatus(task, 2));
            }
            ops.extend([Advance(1), Transition(task, t, 3, 30)]);
        }
    }
    scenario(kind, &ops);
}

fn refused_transitions_and_sub_statuses_change_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let rejected = kind.statements(RejectedTransition);
    // A task in each status, on its last attempt; one ready but not due.
    let tasks = TaskStatus::ALL.map(|status| task_in(s, workflow(), "t", status, 1));
    let later = f.now() + TimeDelta::hours(1);
    let new = NewTaskExecution::new(workflow(), "later").with_status(Ready);
    let delayed = s.create(&NewTaskExecution { retry_at: Some(later), ..new }).unwrap();
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
            let got = fails_after(&f, rejected, || s.transition(task.id, t.clone()));
            assert_eq!(got, want, "{} from {}", t.name(), task.status);
            refused += 1;
        }
    }
    // 9 transitions x 6 statuses, less the 18 legal starts; and 2 retries with no attempt left.
    assert_eq!(refused, 38);
    // Neither a sub-status nor a dispatcher's claim but for a running (a ready, due) task.
    for task in tasks.iter().filter(|t| t.status != Running) {
        for sub in [Some(Deferred), Some(Active), None] {
            let got = fails_after(&f, rejected, || s.set_sub_status(task.id, sub));
            assert_eq!(got, Failure::InvalidTransition(task.id, task.status, Running));
        }
    }
    for task in tasks.iter().filter(|t| t.status != Ready) {
        let got = fails_after(&f, rejected, || s.claim_task(task.id, Uuid::now_v7()));
        assert_eq!(got, Failure::InvalidTransition(task.id, task.status, Running));
    }
    let got = fails_after(&f, rejected, || s.claim_task(delayed.id, Uuid::now_v7()));
    assert_eq!(got, Failure::NotDue(delayed.id, later));
    // Bad arguments, from every status allowed: refused before anything is sent.
    let fail = |e: &str| MarkFailed { error: e.into() };
    let skip = |r: &str| MarkSkipped { reason: r.into() };
    let abandon = |r: &str| MarkAbandoned { reason: r.into() };
    let (long, mib) = ("e".repeat(MESSAGE_MAX_BYTES + 1), "x".repeat(1 << 20));
    let too_long =
        |text: &str| Problem::TooLong { max: MESSAGE_MAX_BYTES, len: text.len(), unit: "bytes" };
    let retry_at = DateTime::from_timestamp(253_402_300_800, 0).unwrap(); // year 10000
    #[rustfmt::skip]
    let bad = [
        (fail("\0"), "error", Problem::ContainsNul), (fail(&long), "error", too_long(&long)),
        (fail(&mib), "error", too_long(&mib)), (skip("a\0"), "reason", Problem::ContainsNul),
        (skip(&mib), "reason", too_long(&mib)), (abandon("\0b"), "reason", Problem::ContainsNul),
        (abandon(&mib), "reason", too_long(&mib)),
        (ScheduleRetry { retry_at }, "retry_at", Problem::TimeOutOfRange),
    ];
    for (t, field, problem) in bad {
        let from = t.plan(f.now()).guard.from;
        for task in tasks.iter().filter(|task| from.contains(task.status)) {
            let got = fails_after(&f, 0, || s.transition(task.id, t.clone()));
            assert_eq!(got, Failure::Validation(field.into(), problem.clone()));
        }
    }
    assert_unchanged(s, &delayed);
    for (task, events) in tasks.iter().zip(events) {
        assert_unchanged(s, task);
        assert_eq!(s.events_for_task(task.id).unwrap(), events);
    }
}

/// Every write of an unknown task (the nil and largest ids too) and every call under a lease
/// of one is not found, after the guarded write and its read; reads match nothing.
fn unknown_ids_are_not_found_or_match_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let task = task_in(s, workflow(), "known", Running, 1);
    let (nobody, rejected) = (Uuid::now_v7(), kind.statements(RejectedTransition));
    for t in every_transition(f.now()) {
        assert_eq!(
            fails_after(&f, rejected, || s.transition(nobody, t)),
            Failure::NotFound(nobody)
        );
    }
    let got = fails_after(&f, rejected, || s.set_sub_status(nobody, None));
    assert_eq!(got, Failure::NotFound(nobody));
    let lease = Lease { task_id: nobody, runner_id: Uuid::now_v7(), claim: 1 };
    assert_eq!(under_lease(s, &lease), [(); 5].map(|()| Failure::NotFound(nobody)));
    for id in [nobody, Uuid::nil(), Uuid::max()] {
        assert_eq!(fails(s.get(id)), Failure::NotFound(id));
    }
    // A batch of unknown leases completes nothing and reports each as lost.
    let lost = Completion { completed: vec![], lost: vec![lease] };
    assert_eq!(s.complete_many(&[lease]).unwrap(), lost);
    assert_eq!(s.events_for_task(nobody).unwrap(), []);
    assert_eq!(s.list_for_workflow(nobody).unwrap(), []);
    assert_eq!(s.events_for_workflow(nobody, None, 10).unwrap(), []);
    assert_unchanged(s, &task);
}

/// Set and cleared, each with its event, nothing else changed (a heartbeat keeps it); every
/// write leaving `Running` (complete, fail, release, a batch, a sweep's reset) clears it.
fn a_running_task_is_deferred_and_resumed_and_every_way_out_clears_it(kind: Backend) {
    let mut ops: Vec<Op> = vec![CreateMany((0..5).map(|i| spec(0, i, true, 3)).collect())];
    ops.extend((0..5).map(|i| ClaimTask(i, 0)));
    for sub in [2, 1, 2, 0, 2] {
        ops.extend([Advance(1), SubStatus(0, sub)]);
    }
    ops.extend([Advance(1), Leased(0, 0, 0)]);
    ops.extend((1..5).map(|i| SubStatus(i, 2)));
    ops.extend([Leased(1, 1, 0), Leased(2, 2, 1), Leased(3, 3, 0), CompleteMany(vec![4], false)]);
    scenario(kind, &[ops, vec![Advance(60), Sweep(30, 3)]].concat());
}

/// The deferred running tasks of the workflows asked for, by id (not active, plain, others').
fn deferred_tasks_lists_the_deferred_running_tasks_of_the_workflows(kind: Backend) {
    let wfs = [0, 0, 1, 2, 0, 0, 0];
    let mut ops: Vec<Op> = vec![CreateMany(
        wfs.iter().enumerate().map(|(i, &wf)| spec(wf, i as u8, true, 1)).collect(),
    )];
    ops.extend((0..6).map(|i| Transition(i, 2, 0, 0)));
    ops.extend([(0, 2), (1, 2), (2, 2), (3, 2), (4, 1), (5, 0)].map(|(t, s)| SubStatus(t, s)));
    scenario(kind, &[ops, vec![Read(11, 0), Read(11, 1), Read(11, 2)]].concat());
}
