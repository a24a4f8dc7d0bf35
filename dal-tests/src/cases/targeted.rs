//! The targeted claim: a dispatcher hands a given task to a given runner (`claim_task`).

use std::sync::Arc;

use chrono::TimeDelta;
use dal_core::{Clock, DalError, EventType, Lease, NewTaskExecution, TaskExecution, TaskStatus};
use uuid::Uuid;

use super::support::{THREADS, on_threads};
use super::support::{
    assert_unchanged, checked_history, expect_err, ready_tasks, task_in, workflow,
};
use crate::case;
use crate::model::counters;
use crate::operations::Operation;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::{Fixture, Setup};
use TaskStatus::*;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(claim_task_claims_the_given_task_as_claim_ready_would),
    case!(claim_task_refuses_what_it_cannot_claim_and_changes_nothing),
    case!(runners_racing_for_one_task_give_it_to_exactly_one),
    case!(a_runner_that_dies_after_claim_task_is_recovered_by_the_sweeper),
];

fn claim_task_claims_the_given_task_as_claim_ready_would(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    // "older" is first in claim_ready's order; the dispatcher picks "picked".
    let older = ready_tasks(s, wf, 1, 1).remove(0);
    f.tick();
    let picked = s
        .create(&NewTaskExecution::new(wf, "picked").with_status(Ready))
        .unwrap();
    let now = f.tick();
    let runner = Uuid::now_v7();
    let (claimed, counts) = f.log.measure(|| s.claim_task(picked.id, runner).unwrap());
    assert_eq!(counts.statements, kind.statements(Operation::ClaimTask));
    let expected = TaskExecution {
        status: Running,
        claimed_by: Some(runner),
        heartbeat_at: Some(now),
        started_at: Some(now),
        claim_count: 1,
        updated_at: now,
        ..picked.clone()
    };
    assert_eq!(claimed.task, expected);
    assert_eq!(
        claimed.lease,
        Lease {
            task_id: picked.id,
            runner_id: runner,
            claim: 1
        }
    );
    assert_eq!(claimed.task.lease(), Some(claimed.lease));
    assert_eq!(s.get(picked.id).unwrap(), expected);
    assert_unchanged(s, &older);
    // Its event is the claim's, with the runner; the history replays to the row.
    let events = checked_history(&f, &expected);
    if f.keeps_history() {
        let event = events.last().unwrap();
        assert_eq!(
            (
                event.event_type,
                &event.event_data,
                event.runner_id,
                event.created_at
            ),
            (EventType::Claimed, &counters(1, 1, 0), Some(runner), now)
        );
    }
    // The lease works as any claim's, and claim_ready no longer sees the task.
    let beat = f.tick();
    assert_eq!(
        s.heartbeat(&claimed.lease).unwrap().heartbeat_at,
        Some(beat)
    );
    let next = s.claim_ready(Uuid::now_v7(), 10).unwrap();
    assert_eq!(
        next.iter().map(|c| c.task.id).collect::<Vec<_>>(),
        [older.id]
    );
    assert_eq!(s.complete(&claimed.lease).unwrap().status, Completed);
}

fn claim_task_refuses_what_it_cannot_claim_and_changes_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let (holder, runner) = (Uuid::now_v7(), Uuid::now_v7());
    let refused = |task: &TaskExecution, runner: Uuid, want: &dyn Fn(&DalError) -> bool| {
        let events = s.events_for_task(task.id).unwrap();
        let (result, counts) = f.log.measure(|| s.claim_task(task.id, runner));
        let err = expect_err(result);
        assert!(want(&err), "{}: {err:?}", task.task_name);
        assert_eq!(
            counts.statements,
            kind.statements(Operation::ClaimTaskRejected)
        );
        assert_unchanged(s, task);
        assert_eq!(s.events_for_task(task.id).unwrap(), events);
    };

    // Claimed already: by another runner, or by the caller itself.
    let taken = ready_tasks(s, wf, 1, 1).remove(0);
    let taken = s.claim_task(taken.id, holder).unwrap().task;
    for who in [runner, holder] {
        refused(&taken, who, &|e| {
            matches!(e, DalError::AlreadyClaimed { id, runner_id }
                if *id == taken.id && *runner_id == holder)
        });
    }

    // Ready but not due: refused with its retry time, claimable once it has come.
    let retry_at = f.clock.now() + TimeDelta::minutes(5);
    let delayed = s
        .create(&NewTaskExecution {
            retry_at: Some(retry_at),
            ..NewTaskExecution::new(wf, "delayed").with_status(Ready)
        })
        .unwrap();
    let cut = delayed.retry_at.unwrap();
    refused(
        &delayed,
        runner,
        &|e| matches!(e, DalError::NotDue { id, retry_at } if *id == delayed.id && *retry_at == cut),
    );

    // Any other status: not started, running without a claim, finished.
    for status in [NotStarted, Running, Completed, Failed, Skipped] {
        let task = task_in(s, wf, &format!("{status}"), status, 1);
        refused(&task, runner, &|e| {
            matches!(e, DalError::InvalidTransition { id, from, to: Running }
                if *id == task.id && *from == status)
        });
    }

    // No such task.
    let missing = Uuid::now_v7();
    let err = expect_err(s.claim_task(missing, runner));
    assert!(
        matches!(err, DalError::NotFound { id } if id == missing),
        "{err:?}"
    );

    f.clock.set(retry_at);
    let claimed = s.claim_task(delayed.id, runner).unwrap();
    assert_eq!(claimed.task.claimed_by, Some(runner));
}

fn runners_racing_for_one_task_give_it_to_exactly_one(kind: Backend) {
    let f = Fixture::with(
        kind,
        Setup {
            pool_size: THREADS as u32,
            ..Setup::default()
        },
    );
    let runners: Arc<Vec<Uuid>> = Arc::new((0..THREADS).map(|_| Uuid::now_v7()).collect());
    for round in 0..20 {
        let task = ready_tasks(f.store(), workflow(), 1, 1).remove(0);
        let results = {
            let runners = Arc::clone(&runners);
            on_threads(&f.store, move |i, store| {
                store.claim_task(task.id, runners[i])
            })
        };
        let winners: Vec<usize> = (0..THREADS).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "{kind}: round {round}: {results:?}");
        let winner = runners[winners[0]];
        for (i, result) in results.iter().enumerate() {
            match result {
                Ok(claimed) => assert_eq!(claimed.lease.runner_id, winner),
                Err(DalError::AlreadyClaimed { id, runner_id }) => {
                    assert_eq!((*id, *runner_id), (task.id, winner), "thread {i}");
                }
                Err(other) => panic!("{kind}: round {round}, thread {i}: {other:?}"),
            }
        }
        let row = f.store.get(task.id).unwrap();
        assert_eq!(
            (row.status, row.claimed_by, row.claim_count),
            (Running, Some(winner), 1)
        );
        let claims = checked_history(&f, &row)
            .into_iter()
            .filter(|e| e.event_type == EventType::Claimed)
            .count();
        assert_eq!(
            claims,
            usize::from(f.keeps_history()),
            "one claim, one event"
        );
    }
}

fn a_runner_that_dies_after_claim_task_is_recovered_by_the_sweeper(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let task = ready_tasks(s, workflow(), 1, 1).remove(0);
    let dead = s.claim_task(task.id, Uuid::now_v7()).unwrap();
    // The runner dies: its heartbeat goes stale and the sweeper resets the task.
    f.clock.advance(TimeDelta::minutes(1));
    let now = f.now();
    let recovery = s
        .recover_stale_claims(now - TimeDelta::seconds(30), 3)
        .unwrap();
    let reset = TaskExecution {
        status: Ready,
        claimed_by: None,
        heartbeat_at: None,
        started_at: None,
        recovery_attempts: 1,
        last_recovery_at: Some(now),
        updated_at: now,
        ..dead.task.clone()
    };
    assert_eq!(recovery.reset, vec![reset.clone()]);
    assert!(recovery.abandoned.is_empty());
    // The dead runner's lease is gone; the dispatcher hands the task to another runner.
    assert!(matches!(
        expect_err(s.complete(&dead.lease)),
        DalError::ClaimLost { id } if id == task.id
    ));
    let again = s.claim_task(task.id, Uuid::now_v7()).unwrap();
    assert_eq!(again.lease.claim, 2);
    assert_eq!(again.task.recovery_attempts, 1);
    assert!(matches!(
        expect_err(s.heartbeat(&dead.lease)),
        DalError::ClaimLost { .. }
    ));
    checked_history(&f, &again.task);
}
