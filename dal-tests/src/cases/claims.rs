//! The runner protocol: claims, leases, heartbeats, fenced completion, crash recovery.

use std::collections::HashSet;

use chrono::TimeDelta;
use dal_core::{Clock, DalError, Lease, NewTaskExecution, Problem, TaskExecution, TaskStatus};
use uuid::Uuid;

use super::support::{
    Sequence, assert_unchanged, checked_history, expect_err, ready_tasks, task_in, workflow,
};
use super::support::{THREADS, on_threads};
use crate::case;
use crate::operations::Operation;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::Fixture;
use TaskStatus::*;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(claim_ready_takes_the_oldest_due_ready_tasks),
    case!(claim_ready_of_nothing_returns_nothing),
    case!(heartbeat_moves_only_heartbeat_at),
    case!(complete_and_fail_need_the_current_lease),
    case!(release_gives_the_task_back_without_counting_an_attempt),
    case!(fail_and_retry_queues_the_next_attempt_under_the_lease),
    case!(complete_many_completes_the_batch_leases_that_still_hold),
    case!(a_crashed_runner_cannot_finish_a_recovered_task),
    case!(a_runner_cannot_finish_an_old_claim_of_a_task_it_claimed_again),
    case!(the_recovery_cap_abandons_a_task_that_keeps_killing_runners),
    case!(a_sweep_leaves_tasks_finished_or_claimed_after_its_threshold),
    case!(find_stale_claims_lists_what_a_sweep_would_touch),
    case!(ready_listings_show_due_tasks_oldest_first),
    case!(runners_claiming_in_batches_claim_every_task_exactly_once),
    case!(runners_claiming_random_batch_sizes_claim_every_task_exactly_once),
];

fn runner() -> Uuid {
    Uuid::now_v7()
}

fn claimed_row(
    before: &TaskExecution,
    runner_id: Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> TaskExecution {
    TaskExecution {
        status: Running,
        claimed_by: Some(runner_id),
        heartbeat_at: Some(now),
        started_at: Some(now),
        claim_count: before.claim_count + 1,
        updated_at: now,
        ..before.clone()
    }
}

fn claim_ready_takes_the_oldest_due_ready_tasks(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let later = f.clock.now() + TimeDelta::minutes(5);
    let earlier = f.clock.now() - TimeDelta::seconds(1);
    let news = vec![
        NewTaskExecution::new(wf, "not-started"),
        NewTaskExecution {
            retry_at: Some(later),
            ..NewTaskExecution::new(wf, "later").with_status(Ready)
        },
        NewTaskExecution::new(wf, "a").with_status(Ready),
        NewTaskExecution {
            retry_at: Some(earlier),
            ..NewTaskExecution::new(wf, "due-retry").with_status(Ready)
        },
        NewTaskExecution::new(wf, "b").with_status(Ready),
        NewTaskExecution::new(wf, "c").with_status(Ready),
    ];
    let created = s.create_many(&news).unwrap();
    let (not_started, not_due) = (created[0].clone(), created[1].clone());
    let now = f.tick();
    let r = runner();
    let first = s.claim_ready(r, 2).unwrap();
    // Oldest first: "a", then "due-retry" (its retry is due); never "later" or "not-started".
    assert_eq!(first.len(), 2);
    for (claimed, before) in first.iter().zip([&created[2], &created[3]]) {
        assert_eq!(claimed.task, claimed_row(before, r, now));
        assert_eq!(
            claimed.lease,
            Lease {
                task_id: before.id,
                runner_id: r,
                claim: 1
            }
        );
        assert_eq!(claimed.task.lease(), Some(claimed.lease));
        assert_eq!(s.get(before.id).unwrap(), claimed.task);
    }
    let rest = s.claim_ready(r, 10).unwrap();
    let names: Vec<&str> = rest.iter().map(|c| c.task.task_name.as_str()).collect();
    assert_eq!(names, ["b", "c"]);
    assert!(s.claim_ready(r, 10).unwrap().is_empty());
    assert_unchanged(s, &not_started);
    assert_unchanged(s, &not_due);
    // Once its retry is due, the delayed task is claimable.
    f.clock.set(later);
    let due = s.claim_ready(r, 10).unwrap();
    assert_eq!(
        due.iter().map(|c| c.task.id).collect::<Vec<_>>(),
        [not_due.id]
    );
}

fn claim_ready_of_nothing_returns_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    ready_tasks(f.store(), workflow(), 3, 1);
    let (claimed, counts) = f.log.measure(|| f.store.claim_ready(runner(), 0).unwrap());
    assert!(claimed.is_empty());
    assert_eq!(counts.statements, 0);
    // With nothing ready, a claim is one statement that returns nothing.
    let g = Fixture::new(kind);
    let (claimed, counts) = g.log.measure(|| g.store.claim_ready(runner(), 5).unwrap());
    assert!(claimed.is_empty());
    assert_eq!(
        counts.statements,
        kind.statements(Operation::ClaimNoneReady)
    );
}

fn heartbeat_moves_only_heartbeat_at(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    ready_tasks(s, workflow(), 1, 1);
    let claimed = s.claim_ready(runner(), 1).unwrap().remove(0);
    let now = f.tick();
    let beat = s.heartbeat(&claimed.lease).unwrap();
    assert_eq!(
        beat,
        TaskExecution {
            heartbeat_at: Some(now),
            updated_at: now,
            ..claimed.task.clone()
        }
    );
    // A lease of another runner, or of another claim, is refused and changes nothing.
    f.tick();
    for wrong in [
        Lease {
            runner_id: runner(),
            ..claimed.lease
        },
        Lease {
            claim: claimed.lease.claim + 1,
            ..claimed.lease
        },
        Lease {
            claim: claimed.lease.claim - 1,
            ..claimed.lease
        },
    ] {
        let err = expect_err(s.heartbeat(&wrong));
        assert!(
            matches!(err, DalError::ClaimLost { id } if id == claimed.task.id),
            "{err:?}"
        );
        assert_unchanged(s, &beat);
    }
    let unknown = Lease {
        task_id: Uuid::now_v7(),
        ..claimed.lease
    };
    let err = expect_err(s.heartbeat(&unknown));
    assert!(
        matches!(err, DalError::NotFound { id } if id == unknown.task_id),
        "{err:?}"
    );
}

fn complete_and_fail_need_the_current_lease(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    ready_tasks(s, workflow(), 2, 3);
    let mut claims = s.claim_ready(runner(), 2).unwrap();
    let (second, first) = (claims.pop().unwrap(), claims.pop().unwrap());

    let now = f.tick();
    let done = s.complete(&first.lease).unwrap();
    assert_eq!(
        done,
        TaskExecution {
            status: Completed,
            completed_at: Some(now),
            claimed_by: None,
            heartbeat_at: None,
            updated_at: now,
            ..first.task.clone()
        }
    );
    // The claim ended with the completion: the lease no longer holds.
    for again in [s.complete(&first.lease), s.fail(&first.lease, "late")] {
        assert!(matches!(expect_err(again), DalError::ClaimLost { .. }));
    }
    assert_unchanged(s, &done);

    let now = f.tick();
    let failed = s.fail(&second.lease, "exit code 2").unwrap();
    assert_eq!(
        failed,
        TaskExecution {
            status: Failed,
            error_details: Some("exit code 2".into()),
            last_error: Some("exit code 2".into()),
            completed_at: Some(now),
            claimed_by: None,
            heartbeat_at: None,
            updated_at: now,
            ..second.task.clone()
        }
    );
    let err = expect_err(s.fail(&second.lease, "bad\0"));
    assert!(matches!(err, DalError::Validation(_)), "{err:?}");
    assert_unchanged(s, &failed);
}

fn fail_and_retry_queues_the_next_attempt_under_the_lease(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    ready_tasks(s, workflow(), 2, 2);
    let r = runner();
    let mut claims = s.claim_ready(r, 2).unwrap();
    let (other, claimed) = (claims.pop().unwrap(), claims.pop().unwrap());

    // Rejected input: nothing sent, nothing changed.
    let (results, counts) = f.log.measure(|| {
        [
            s.fail_and_retry(&claimed.lease, "bad\0", f.now()),
            s.fail_and_retry(
                &claimed.lease,
                &"x".repeat(dal_core::validate::MESSAGE_MAX_BYTES + 1),
                f.now(),
            ),
            s.fail_and_retry(
                &claimed.lease,
                "e",
                dal_core::validate::earliest_time() - TimeDelta::days(1),
            ),
        ]
    });
    let rejected: Vec<(String, Problem)> = results
        .into_iter()
        .map(|result| match expect_err(result) {
            DalError::Validation(v) => (v.field, v.problem),
            other => panic!("{other:?}"),
        })
        .collect();
    let too_long = Problem::TooLong {
        max: dal_core::validate::MESSAGE_MAX_BYTES,
        len: dal_core::validate::MESSAGE_MAX_BYTES + 1,
        unit: "bytes",
    };
    assert_eq!(
        rejected,
        [
            ("error".to_owned(), Problem::ContainsNul),
            ("error".to_owned(), too_long),
            ("retry_at".to_owned(), Problem::TimeOutOfRange),
        ]
    );
    assert_eq!(counts.statements, 0);
    assert_unchanged(s, &claimed.task);

    // Another runner's lease, or an old claim number: lost, nothing changed.
    let foreign = Lease {
        runner_id: runner(),
        ..claimed.lease
    };
    let old = Lease {
        claim: claimed.lease.claim - 1,
        ..claimed.lease
    };
    for lease in [foreign, old] {
        let err = expect_err(s.fail_and_retry(&lease, "e", f.now()));
        assert!(
            matches!(err, DalError::ClaimLost { id } if id == claimed.task.id),
            "{err:?}"
        );
    }
    assert_unchanged(s, &claimed.task);

    let now = f.tick();
    let retry_at = now + TimeDelta::seconds(30);
    let retried = s
        .fail_and_retry(&claimed.lease, "exit code 2", retry_at)
        .unwrap();
    let expected = TaskExecution {
        status: Ready,
        attempt: 2,
        retry_at: Some(retry_at),
        error_details: None,
        last_error: Some("exit code 2".into()),
        started_at: None,
        completed_at: None,
        claimed_by: None,
        heartbeat_at: None,
        updated_at: now,
        ..claimed.task.clone()
    };
    assert_eq!(retried, expected);
    assert_unchanged(s, &expected);
    if let Some(last) = checked_history(&f, &retried).pop() {
        assert_eq!(
            (last.event_type, last.runner_id, last.created_at),
            (dal_core::EventType::RetryScheduled, Some(r), now)
        );
        assert_eq!(
            last.event_data,
            serde_json::json!({
                "retry_at": dal_core::event::time_value(retry_at),
                "error": "exit code 2",
                "attempt": 2,
                "claim": 1,
                "recovery_attempts": 0,
            })
        );
    }
    // Not due before `retry_at`; the claim ended with the retry.
    assert!(s.claim_ready(r, 1).unwrap().is_empty());
    let err = expect_err(s.fail_and_retry(&claimed.lease, "again", f.now()));
    assert!(matches!(err, DalError::ClaimLost { .. }), "{err:?}");
    assert_unchanged(s, &expected);

    // Due at `retry_at`, claimed again: the last attempt cannot be retried.
    f.clock.advance(TimeDelta::seconds(30));
    let again = s.claim_ready(r, 1).unwrap().remove(0);
    assert_eq!((again.task.id, again.task.attempt), (claimed.task.id, 2));
    let err = expect_err(s.fail_and_retry(&again.lease, "e", f.now()));
    assert!(
        matches!(err, DalError::RetriesExhausted { id, attempt: 2, max_attempts: 2 }
            if id == claimed.task.id),
        "{err:?}"
    );
    assert_unchanged(s, &again.task);

    // A released task's lease no longer holds; an unknown task is not found.
    let released = s.release(&other.lease).unwrap();
    let gone = expect_err(s.fail_and_retry(&other.lease, "e", f.now()));
    assert!(matches!(gone, DalError::ClaimLost { .. }), "{gone:?}");
    assert_unchanged(s, &released);
    let missing = Lease {
        task_id: Uuid::now_v7(),
        ..other.lease
    };
    let err = expect_err(s.fail_and_retry(&missing, "e", f.now()));
    assert!(
        matches!(err, DalError::NotFound { id } if id == missing.task_id),
        "{err:?}"
    );
}

fn release_gives_the_task_back_without_counting_an_attempt(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    ready_tasks(s, workflow(), 1, 2);
    let r = runner();
    let claimed = s.claim_ready(r, 1).unwrap().remove(0);
    let now = f.tick();
    let released = s.release(&claimed.lease).unwrap();
    assert_eq!(
        released,
        TaskExecution {
            status: Ready,
            claimed_by: None,
            heartbeat_at: None,
            started_at: None,
            updated_at: now,
            ..claimed.task.clone()
        }
    );
    assert_eq!(released.attempt, 1);
    // Claimed again, by the same runner: a new claim number, and the old lease is dead.
    let again = s.claim_ready(r, 1).unwrap().remove(0);
    assert_eq!(
        again.lease,
        Lease {
            claim: 2,
            ..claimed.lease
        }
    );
    assert!(matches!(
        expect_err(s.release(&claimed.lease)),
        DalError::ClaimLost { .. }
    ));
    assert!(matches!(
        expect_err(s.complete(&claimed.lease)),
        DalError::ClaimLost { .. }
    ));
    assert_unchanged(s, &again.task);
}

fn complete_many_completes_the_batch_leases_that_still_hold(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    ready_tasks(s, wf, 6, 1);
    let r = runner();
    let claims = s.claim_ready(r, 6).unwrap();
    // Lease 2 is stale: released and claimed again. Task 3 is already completed.
    s.release(&claims[2].lease).unwrap();
    let again = s.claim_ready(r, 1).unwrap().remove(0);
    assert_eq!(again.task.id, claims[2].task.id);
    let done_before = s.complete(&claims[3].lease).unwrap();
    let batch: Vec<Lease> = claims.iter().map(|c| c.lease).collect();
    let now = f.tick();
    let (completion, counts) = f.log.measure(|| s.complete_many(&batch).unwrap());
    assert_eq!(
        counts.statements,
        kind.statements(Operation::CompleteMany30)
    );
    let expected: Vec<TaskExecution> = [0, 1, 4, 5]
        .iter()
        .map(|&i| TaskExecution {
            status: Completed,
            completed_at: Some(now),
            claimed_by: None,
            heartbeat_at: None,
            updated_at: now,
            ..claims[i].task.clone()
        })
        .collect();
    assert_eq!(completion.completed, expected);
    assert_eq!(completion.lost, vec![claims[2].lease, claims[3].lease]);
    for row in &expected {
        assert_unchanged(s, row);
        if let Some(last) = checked_history(&f, row).pop() {
            assert_eq!(
                (last.event_type, last.runner_id, last.created_at),
                (dal_core::EventType::Completed, Some(r), now)
            );
        }
    }
    assert_unchanged(s, &again.task);
    assert_unchanged(s, &done_before);
    // A batch is one runner's; nothing is sent otherwise.
    ready_tasks(s, workflow(), 2, 1);
    let mine = s.claim_ready(r, 1).unwrap().remove(0);
    let theirs = s.claim_ready(runner(), 1).unwrap().remove(0);
    let (result, counts) = f
        .log
        .measure(|| s.complete_many(&[mine.lease, theirs.lease]));
    let err = expect_err(result);
    assert!(
        matches!(&err, DalError::Validation(v) if v.field == "leases[1].runner_id"
            && v.problem == dal_core::Problem::NotTheSameRunner),
        "{err:?}"
    );
    assert_eq!(counts.statements, 0);
    assert_unchanged(s, &mine.task);
    assert_unchanged(s, &theirs.task);
    // A task twice, by one lease or by a stale lease beside the current one: refused, as
    // neither lease could come back on its own.
    let stale = Lease {
        claim: mine.lease.claim - 1,
        ..mine.lease
    };
    for (batch, first) in [
        (vec![mine.lease, mine.lease], "leases[0]"),
        (vec![stale, again.lease, mine.lease], "leases[0]"),
    ] {
        let (result, counts) = f.log.measure(|| s.complete_many(&batch));
        let err = expect_err(result);
        let twice = dal_core::Problem::FinishedTwice {
            first: first.into(),
        };
        assert!(
            matches!(&err, DalError::Validation(v) if v.field == format!("leases[{}].task_id", batch.len() - 1)
                && v.problem == twice),
            "{err:?}"
        );
        assert_eq!(counts.statements, 0);
        assert_unchanged(s, &mine.task);
    }
    let (empty, counts) = f.log.measure(|| s.complete_many(&[]).unwrap());
    assert_eq!(
        (empty, counts.statements),
        (dal_core::Completion::default(), 0)
    );
}

/// The staleness threshold the sweeper uses in these cases.
const STALE_AFTER: TimeDelta = TimeDelta::seconds(30);

fn a_crashed_runner_cannot_finish_a_recovered_task(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    ready_tasks(s, workflow(), 6, 1);
    let (crashed, alive) = (runner(), runner());
    let doomed = s.claim_ready(crashed, 3).unwrap();
    let healthy = s.claim_ready(alive, 3).unwrap();
    // Time passes; only the healthy runner heart-beats.
    f.clock.advance(TimeDelta::seconds(45));
    for claim in &healthy {
        s.heartbeat(&claim.lease).unwrap();
    }
    let now = f.now();
    let recovery = s.recover_stale_claims(now - STALE_AFTER, 5).unwrap();
    assert!(recovery.abandoned.is_empty());
    assert_eq!(recovery.reset.len(), 3);
    for (reset, before) in recovery.reset.iter().zip(&doomed) {
        assert_eq!(
            *reset,
            TaskExecution {
                status: Ready,
                recovery_attempts: 1,
                last_recovery_at: Some(now),
                started_at: None,
                claimed_by: None,
                heartbeat_at: None,
                updated_at: now,
                ..before.task.clone()
            }
        );
    }
    // Another runner takes them over and finishes them.
    let takeover = s.claim_ready(alive, 10).unwrap();
    assert_eq!(
        takeover.iter().map(|c| c.task.id).collect::<Vec<_>>(),
        doomed.iter().map(|c| c.task.id).collect::<Vec<_>>()
    );
    for claim in &takeover {
        assert_eq!(claim.lease.claim, 2);
        s.complete(&claim.lease).unwrap();
    }
    // The crashed runner comes back and tries to finish its old attempts: refused, unchanged.
    for claim in &doomed {
        let finished = s.get(claim.task.id).unwrap();
        assert_eq!(finished.status, Completed);
        for late in [
            s.complete(&claim.lease),
            s.fail(&claim.lease, "late"),
            s.fail_and_retry(&claim.lease, "late", now),
            s.heartbeat(&claim.lease),
            s.release(&claim.lease),
        ] {
            let err = expect_err(late);
            assert!(
                matches!(err, DalError::ClaimLost { id } if id == claim.task.id),
                "{err:?}"
            );
        }
        assert_unchanged(s, &finished);
    }
    // The healthy runner's tasks were never touched by the sweep.
    for claim in &healthy {
        let row = s.get(claim.task.id).unwrap();
        assert_eq!(
            (row.status, row.recovery_attempts, row.claim_count),
            (Running, 0, 1)
        );
        s.complete(&claim.lease).unwrap();
    }
}

fn a_runner_cannot_finish_an_old_claim_of_a_task_it_claimed_again(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    ready_tasks(s, workflow(), 1, 1);
    let r = runner();
    let old = s.claim_ready(r, 1).unwrap().remove(0);
    f.clock.advance(TimeDelta::seconds(60));
    let recovery = s.recover_stale_claims(f.now() - STALE_AFTER, 5).unwrap();
    assert_eq!(recovery.reset.len(), 1);
    // The same runner id claims the task again: same runner, new claim.
    let new = s.claim_ready(r, 1).unwrap().remove(0);
    assert_eq!(
        new.lease,
        Lease {
            claim: 2,
            ..old.lease
        }
    );
    let err = expect_err(s.complete(&old.lease));
    assert!(matches!(err, DalError::ClaimLost { .. }), "{err:?}");
    assert_unchanged(s, &new.task);
    let done = s.complete(&new.lease).unwrap();
    assert_eq!(done.status, Completed);
}

fn the_recovery_cap_abandons_a_task_that_keeps_killing_runners(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let task = ready_tasks(s, workflow(), 1, 1).remove(0);
    const CAP: i32 = 3;
    for round in 1..=CAP {
        s.claim_ready(runner(), 1).unwrap().remove(0);
        f.clock.advance(TimeDelta::minutes(1));
        let recovery = s.recover_stale_claims(f.now() - STALE_AFTER, CAP).unwrap();
        assert!(recovery.abandoned.is_empty());
        assert_eq!(
            recovery
                .reset
                .iter()
                .map(|t| t.recovery_attempts)
                .collect::<Vec<_>>(),
            [round]
        );
    }
    let last = s.claim_ready(runner(), 1).unwrap().remove(0);
    f.clock.advance(TimeDelta::minutes(1));
    let now = f.now();
    let recovery = s.recover_stale_claims(now - STALE_AFTER, CAP).unwrap();
    assert!(recovery.reset.is_empty());
    let reason =
        "abandoned: its runner stopped heart-beating and the task was already recovered 3 times";
    assert_eq!(
        recovery.abandoned,
        vec![TaskExecution {
            status: Failed,
            error_details: Some(reason.into()),
            last_error: Some(reason.into()),
            completed_at: Some(now),
            abandoned_at: Some(now),
            claimed_by: None,
            heartbeat_at: None,
            updated_at: now,
            ..last.task.clone()
        }]
    );
    assert_eq!(recovery.abandoned[0].id, task.id);
    assert!(recovery.abandoned[0].is_abandoned());
    assert!(s.claim_ready(runner(), 1).unwrap().is_empty());
    // With a cap of 0, a stale task is abandoned at once.
    ready_tasks(s, workflow(), 1, 1);
    s.claim_ready(runner(), 1).unwrap();
    f.clock.advance(TimeDelta::minutes(1));
    let recovery = s.recover_stale_claims(f.now() - STALE_AFTER, 0).unwrap();
    assert_eq!((recovery.reset.len(), recovery.abandoned.len()), (0, 1));
    let err = expect_err(s.recover_stale_claims(f.now(), -1));
    assert!(
        matches!(&err, DalError::Validation(v) if v.field == "max_recovery_attempts"),
        "{err:?}"
    );
}

fn a_sweep_leaves_tasks_finished_or_claimed_after_its_threshold(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    ready_tasks(s, workflow(), 4, 1);
    let claims = s.claim_ready(runner(), 4).unwrap();
    f.clock.advance(TimeDelta::minutes(2));
    // The sweeper computes its threshold: all four look stale now...
    let threshold = f.now() - STALE_AFTER;
    assert_eq!(s.find_stale_claims(threshold).unwrap().len(), 4);
    // ...but before its statements run, one task completes, one fails, one is released and
    // claimed again (a fresh heartbeat), one heart-beats.
    let completed = s.complete(&claims[0].lease).unwrap();
    let failed = s.fail(&claims[1].lease, "boom").unwrap();
    s.release(&claims[2].lease).unwrap();
    let reclaimed = s.claim_ready(runner(), 1).unwrap().remove(0);
    assert_eq!(reclaimed.task.id, claims[2].task.id);
    let beating = s.heartbeat(&claims[3].lease).unwrap();
    let recovery = s.recover_stale_claims(threshold, 5).unwrap();
    assert_eq!(recovery, dal_core::Recovery::default());
    for row in [&completed, &failed, &reclaimed.task, &beating] {
        assert_unchanged(s, row);
    }
}

fn find_stale_claims_lists_what_a_sweep_would_touch(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    ready_tasks(s, workflow(), 3, 1);
    let lease_less = task_in(s, workflow(), "running-without-claim", Running, 1);
    let claims = s.claim_ready(runner(), 3).unwrap();
    f.clock.advance(TimeDelta::minutes(1));
    s.heartbeat(&claims[1].lease).unwrap();
    let threshold = f.now() - STALE_AFTER;
    let stale = s.find_stale_claims(threshold).unwrap();
    let expected: Vec<TaskExecution> = [&claims[0], &claims[2]]
        .iter()
        .map(|c| c.task.clone())
        .collect();
    assert_eq!(stale, expected);
    let recovery = s.recover_stale_claims(threshold, 5).unwrap();
    assert_eq!(
        recovery.reset.iter().map(|t| t.id).collect::<Vec<_>>(),
        expected.iter().map(|t| t.id).collect::<Vec<_>>()
    );
    // A task running without a claim has no heartbeat to judge: sweeps leave it alone.
    assert_unchanged(s, &lease_less);
    assert!(s.find_stale_claims(threshold).unwrap().is_empty());
}

fn ready_listings_show_due_tasks_oldest_first(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let now = f.clock.now();
    let news = vec![
        NewTaskExecution::new(wf, "fresh-1").with_status(Ready),
        NewTaskExecution {
            retry_at: Some(now + TimeDelta::seconds(10)),
            ..NewTaskExecution::new(wf, "later").with_status(Ready)
        },
        NewTaskExecution {
            retry_at: Some(now - TimeDelta::seconds(10)),
            ..NewTaskExecution::new(wf, "retry-due").with_status(Ready)
        },
        NewTaskExecution::new(wf, "not-started"),
        NewTaskExecution::new(wf, "fresh-2").with_status(Ready),
        NewTaskExecution {
            retry_at: Some(now),
            ..NewTaskExecution::new(wf, "retry-now").with_status(Ready)
        },
    ];
    let created = s.create_many(&news).unwrap();
    let names =
        |rows: Vec<TaskExecution>| rows.into_iter().map(|r| r.task_name).collect::<Vec<_>>();
    assert_eq!(
        names(s.list_ready(10).unwrap()),
        ["fresh-1", "retry-due", "fresh-2", "retry-now"]
    );
    assert_eq!(names(s.list_ready(2).unwrap()), ["fresh-1", "retry-due"]);
    assert_eq!(
        names(s.list_due_retries(10).unwrap()),
        ["retry-due", "retry-now"]
    );
    assert!(s.list_ready(0).unwrap().is_empty());
    assert_eq!(s.list_ready(1).unwrap()[0], created[0]);
    // Once due, the delayed task queues behind the tasks that were due before it, although
    // its id is older than theirs: oldest due first, then id.
    f.clock.advance(TimeDelta::seconds(10));
    assert_eq!(
        names(s.list_due_retries(10).unwrap()),
        ["retry-due", "retry-now", "later"]
    );
    assert_eq!(
        names(s.list_ready(10).unwrap()),
        ["fresh-1", "retry-due", "fresh-2", "retry-now", "later"]
    );
    // A task made ready now queues behind every task already due.
    let not_started = created
        .iter()
        .find(|t| t.task_name == "not-started")
        .unwrap();
    s.mark_ready(not_started.id).unwrap();
    assert_eq!(
        names(s.list_ready(10).unwrap()),
        [
            "fresh-1",
            "retry-due",
            "fresh-2",
            "retry-now",
            "later",
            "not-started"
        ]
    );
}

/// Claims every task of `tasks` with [`THREADS`] runners, each claiming batches of
/// `batch(thread, round)` until a claim returns nothing, and completing what it claimed with
/// its lease (even threads one by one, odd threads with `complete_many`). Returns how many
/// claims were made.
fn claim_all_concurrently(
    f: &Fixture,
    tasks: &[TaskExecution],
    batch: fn(usize, &mut Sequence) -> u32,
) -> usize {
    let per_thread = on_threads(&f.store, move |i, store| {
        let runner_id = Uuid::now_v7();
        let mut sequence = Sequence::new(i as u64 + 1);
        let mut claimed = Vec::new();
        loop {
            let limit = batch(i, &mut sequence);
            let got = store.claim_ready(runner_id, limit).expect("claim_ready");
            assert!(
                got.len() <= limit as usize,
                "{} claimed with a limit of {limit}",
                got.len()
            );
            if got.is_empty() {
                break;
            }
            assert!(
                got.iter()
                    .all(|claim| claim.task.claimed_by == Some(runner_id))
            );
            claimed.extend(got.iter().map(|claim| claim.task.id));
            if i % 2 == 0 {
                for claim in &got {
                    store
                        .complete(&claim.lease)
                        .expect("complete with the lease");
                }
            } else {
                let leases: Vec<Lease> = got.iter().map(|claim| claim.lease).collect();
                let completion = store.complete_many(&leases).expect("complete_many");
                assert!(completion.lost.is_empty());
                assert_eq!(completion.completed.len(), leases.len());
            }
        }
        claimed
    });
    let all: Vec<Uuid> = per_thread.into_iter().flatten().collect();
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    let expected: HashSet<Uuid> = tasks.iter().map(|t| t.id).collect();
    let duplicates = all.len() - distinct.len();
    assert_eq!(duplicates, 0, "tasks claimed twice");
    assert_eq!(distinct, expected, "tasks missed or unknown");
    let rows = f
        .store
        .list_for_workflow(tasks[0].workflow_execution_id)
        .unwrap();
    assert!(
        rows.iter()
            .all(|r| r.status == Completed && r.claim_count == 1 && r.claimed_by.is_none())
    );
    if std::env::var_os("DAL_REPORT").is_some() {
        eprintln!(
            "{}: {} tasks, {} claimed, {duplicates} claimed twice",
            f.kind,
            tasks.len(),
            all.len()
        );
    }
    all.len()
}

/// Tasks in the many-runner cases.
pub const MANY_TASKS: usize = 2_000;

fn runners_claiming_in_batches_claim_every_task_exactly_once(kind: Backend) {
    let f = Fixture::with(
        kind,
        crate::suite::Setup {
            pool_size: THREADS as u32,
            ..Default::default()
        },
    );
    let tasks = ready_tasks(f.store(), workflow(), MANY_TASKS, 1);
    assert_eq!(claim_all_concurrently(&f, &tasks, |_, _| 16), MANY_TASKS);
}

fn runners_claiming_random_batch_sizes_claim_every_task_exactly_once(kind: Backend) {
    let f = Fixture::with(
        kind,
        crate::suite::Setup {
            pool_size: THREADS as u32,
            ..Default::default()
        },
    );
    for _ in 0..2 {
        let tasks = ready_tasks(f.store(), workflow(), MANY_TASKS, 1);
        assert_eq!(
            claim_all_concurrently(&f, &tasks, |_, seq| seq.next_in(1, 64)),
            MANY_TASKS
        );
    }
}
