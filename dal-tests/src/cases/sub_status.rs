//! The sub-status of a running task: set, cleared, refused outside `Running`, cleared by every
//! write that leaves `Running`, and read back by workflow execution.

use chrono::TimeDelta;
use dal_core::{DalError, EventType, SubStatus, TaskExecution, TaskStatus};
use serde_json::json;
use uuid::Uuid;

use super::support::{
    assert_unchanged, checked_history, expect_err, ready_tasks, task_in, workflow,
};
use crate::case;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::Fixture;

use crate::operations::Operation;
use SubStatus::*;
use TaskStatus::*;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(a_running_task_is_deferred_resumed_and_cleared_with_its_events),
    case!(a_sub_status_is_refused_outside_running_and_nothing_changes),
    case!(every_write_that_leaves_running_clears_the_sub_status),
    case!(deferred_tasks_lists_the_deferred_running_tasks_of_the_workflows),
];

fn a_running_task_is_deferred_resumed_and_cleared_with_its_events(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    ready_tasks(s, workflow(), 1, 1);
    let claimed = s.claim_ready(Uuid::now_v7(), 1).unwrap().remove(0);
    let mut row = claimed.task.clone();
    for (sub, event_type, data) in [
        (Some(Deferred), EventType::Deferred, json!("deferred")),
        (Some(Active), EventType::Resumed, json!("active")),
        (Some(Deferred), EventType::Deferred, json!("deferred")),
        (None, EventType::Resumed, json!(null)),
    ] {
        let now = f.tick();
        let (set, counts) = f.log.measure(|| s.set_sub_status(row.id, sub).unwrap());
        assert_eq!(counts.statements, kind.statements(Operation::SetSubStatus));
        row = TaskExecution {
            sub_status: sub,
            updated_at: now,
            ..row
        };
        assert_eq!(set, row);
        assert_eq!(s.get(row.id).unwrap(), row);
        let events = checked_history(&f, &row);
        if let Some(event) = events.last() {
            assert_eq!(
                (
                    event.event_type,
                    &event.event_data,
                    event.runner_id,
                    event.created_at
                ),
                (
                    event_type,
                    &json!({"sub_status": data, "attempt": 1, "claim": 1, "recovery_attempts": 0}),
                    None,
                    now
                )
            );
        }
    }
    // The claim is untouched: its runner heart-beats and completes the task as usual.
    s.set_sub_status(row.id, Some(Deferred)).unwrap();
    let beat = f.tick();
    let alive = s.heartbeat(&claimed.lease).unwrap();
    assert_eq!(
        (alive.heartbeat_at, alive.sub_status),
        (Some(beat), Some(Deferred))
    );
    let done = s.complete(&claimed.lease).unwrap();
    assert_eq!((done.status, done.sub_status), (Completed, None));
}

fn a_sub_status_is_refused_outside_running_and_nothing_changes(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    for status in [NotStarted, Ready, Completed, Failed, Skipped] {
        let task = task_in(s, wf, &format!("{status}"), status, 1);
        let events = s.events_for_task(task.id).unwrap();
        for sub in [Some(Deferred), Some(Active), None] {
            let (result, counts) = f.log.measure(|| s.set_sub_status(task.id, sub));
            let err = expect_err(result);
            assert!(
                matches!(err, DalError::InvalidTransition { id, from, to: Running }
                    if id == task.id && from == status),
                "{status} {sub:?}: {err:?}"
            );
            assert_eq!(
                counts.statements,
                kind.statements(Operation::RejectedTransition)
            );
            assert_unchanged(s, &task);
            assert_eq!(s.events_for_task(task.id).unwrap(), events);
        }
    }
    let missing = Uuid::now_v7();
    let err = expect_err(s.set_sub_status(missing, Some(Deferred)));
    assert!(
        matches!(err, DalError::NotFound { id } if id == missing),
        "{err:?}"
    );
}

/// A way out of `Running` for a claimed task.
type Out<'a> = dyn Fn(&dal_core::Claimed) -> TaskExecution + 'a;

fn every_write_that_leaves_running_clears_the_sub_status(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let runner = Uuid::now_v7();
    // A deferred task that each way out of Running then takes.
    let deferred = || {
        let task = ready_tasks(s, workflow(), 1, 3).remove(0);
        let claimed = s.claim_task(task.id, runner).unwrap();
        s.set_sub_status(task.id, Some(Deferred)).unwrap();
        claimed
    };
    let outs: [(&str, &Out, TaskStatus); 7] = [
        ("complete", &|c| s.complete(&c.lease).unwrap(), Completed),
        ("fail", &|c| s.fail(&c.lease, "e").unwrap(), Failed),
        ("release", &|c| s.release(&c.lease).unwrap(), Ready),
        (
            "schedule_retry",
            &|c| s.schedule_retry(c.task.id, f.now()).unwrap(),
            Ready,
        ),
        (
            "reset_task_for_recovery",
            &|c| s.reset_task_for_recovery(c.task.id).unwrap(),
            Ready,
        ),
        (
            "mark_abandoned",
            &|c| s.mark_abandoned(c.task.id, "r").unwrap(),
            Failed,
        ),
        (
            "complete_many",
            &|c| s.complete_many(&[c.lease]).unwrap().completed.remove(0),
            Completed,
        ),
    ];
    for (name, out, status) in outs {
        let claimed = deferred();
        let row = out(&claimed);
        assert_eq!((row.status, row.sub_status), (status, None), "{name}");
        assert_eq!(s.get(row.id).unwrap(), row, "{name}");
    }
    // A deferred task whose runner died: the sweep resets it, and the sub-status goes.
    let claimed = deferred();
    f.clock.advance(TimeDelta::minutes(1));
    let recovery = s
        .recover_stale_claims(f.now() - TimeDelta::seconds(30), 3)
        .unwrap();
    assert_eq!(recovery.reset.len(), 1);
    assert_eq!(
        (
            recovery.reset[0].id,
            recovery.reset[0].status,
            recovery.reset[0].sub_status
        ),
        (claimed.task.id, Ready, None)
    );
}

fn deferred_tasks_lists_the_deferred_running_tasks_of_the_workflows(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let (wf, other, elsewhere) = (workflow(), workflow(), workflow());
    let deferred: Vec<TaskExecution> = [wf, wf, other, elsewhere]
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let task = task_in(s, *w, &format!("d{i}"), Running, 1);
            s.set_sub_status(task.id, Some(Deferred)).unwrap()
        })
        .collect();
    let active = task_in(s, wf, "active", Running, 1);
    s.set_sub_status(active.id, Some(Active)).unwrap();
    task_in(s, wf, "running", Running, 1);
    task_in(s, wf, "ready", Ready, 1);
    let (found, counts) = f
        .log
        .measure(|| s.deferred_tasks(&[wf, other, Uuid::now_v7()]).unwrap());
    assert_eq!(counts.statements, kind.statements(Operation::DeferredTasks));
    let mut expected = deferred[..3].to_vec();
    expected.sort_by_key(|t| t.id);
    assert_eq!(found, expected);
    let (none, counts) = f.log.measure(|| s.deferred_tasks(&[]).unwrap());
    assert!(none.is_empty());
    assert_eq!(counts.statements, 0);
}
