//! The runner cycle: finish a batch and claim the next in one unit (`finish_and_claim`).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::TimeDelta;
use dal_core::{
    DalError, EventType, FailedTask, Finished, Lease, Problem, RetriedTask, TaskExecution,
    TaskStatus, ValidationError,
};
use serde_json::json;
use uuid::Uuid;

use super::support::{THREADS, on_threads};
use super::support::{assert_unchanged, checked_history, expect_err, ready_tasks, workflow};
use crate::case;
use crate::model::counters;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::{Fixture, Setup};
use TaskStatus::*;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(a_cycle_finishes_a_batch_and_claims_the_next_as_one_change),
    case!(a_cycle_refuses_bad_input_and_writes_nothing),
    case!(a_cycle_that_only_claims_or_only_finishes),
    case!(a_cycle_retries_failed_attempts_and_fails_the_last),
    case!(runners_cycling_together_finish_every_task_once),
];

fn failure(lease: Lease, error: &str) -> FailedTask {
    FailedTask {
        lease,
        error: error.into(),
    }
}

/// `task` (`Ready`, never claimed) as a claim by `runner` at `now` leaves it.
fn claimed_at(
    task: &TaskExecution,
    runner: Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> TaskExecution {
    TaskExecution {
        status: Running,
        claimed_by: Some(runner),
        heartbeat_at: Some(now),
        started_at: Some(now),
        claim_count: 1,
        updated_at: now,
        ..task.clone()
    }
}

/// The events a cycle wrote (`new`): one per changed task, as `expected` lists them (task,
/// type, data), in task id order, all of `runner` at `now` in workflow execution `wf`; none
/// with the history off.
fn cycle_events(
    f: &Fixture,
    new: &[dal_core::ExecutionEvent],
    mut expected: Vec<(Uuid, EventType, serde_json::Value)>,
    (runner, now, wf): (Uuid, chrono::DateTime<chrono::Utc>, Uuid),
) {
    expected.sort_by_key(|(id, _, _)| *id);
    if !f.keeps_history() {
        expected.clear();
    }
    assert_eq!(
        new.iter()
            .map(|e| (e.task_execution_id, e.event_type, e.event_data.clone()))
            .collect::<Vec<_>>(),
        expected
    );
    for e in new {
        assert_eq!((e.runner_id, e.created_at), (Some(runner), now));
        assert_eq!(e.workflow_execution_id, wf);
    }
}

fn a_cycle_finishes_a_batch_and_claims_the_next_as_one_change(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    // Eight tasks of one batch: one queue position, claimed in id order.
    let mut tasks = ready_tasks(s, wf, 8, 3);
    tasks.sort_by_key(|t| t.id);
    let runner = Uuid::now_v7();
    let start = f.tick();
    let held = s.claim_ready(runner, 4).unwrap();
    assert_eq!(
        held.iter().map(|c| c.task.id).collect::<Vec<_>>(),
        tasks[..4].iter().map(|t| t.id).collect::<Vec<_>>()
    );
    // The fourth lease is stale: a claim the task no longer has.
    let stale = Lease {
        claim: held[3].lease.claim + 1,
        ..held[3].lease
    };
    let events_before = s.events_for_workflow(wf, None, 1_000).unwrap().len();
    let now = f.tick();
    let finished = Finished {
        retried: Vec::new(),
        completed: vec![held[1].lease, held[0].lease, stale],
        failed: vec![failure(held[2].lease, "boom")],
    };
    let (cycle, counts) = f
        .log
        .measure(|| s.finish_and_claim(runner, &finished, 3).unwrap());
    let shape = kind.statement_counts();
    assert_eq!(counts.statements, shape.cycle + shape.cycle_per_failure);

    let completed: Vec<TaskExecution> = held[..2]
        .iter()
        .map(|c| TaskExecution {
            status: Completed,
            completed_at: Some(now),
            claimed_by: None,
            heartbeat_at: None,
            updated_at: now,
            ..c.task.clone()
        })
        .collect();
    let failed = TaskExecution {
        status: Failed,
        error_details: Some("boom".into()),
        last_error: Some("boom".into()),
        completed_at: Some(now),
        claimed_by: None,
        heartbeat_at: None,
        updated_at: now,
        ..held[2].task.clone()
    };
    let claimed: Vec<TaskExecution> = tasks[4..7]
        .iter()
        .map(|t| claimed_at(t, runner, now))
        .collect();
    assert_eq!(cycle.completed, completed);
    assert_eq!(cycle.failed, vec![failed.clone()]);
    assert_eq!(cycle.lost, vec![stale]);
    assert_eq!(
        cycle.claimed.iter().map(|c| &c.task).collect::<Vec<_>>(),
        claimed.iter().collect::<Vec<_>>()
    );
    for c in &cycle.claimed {
        assert_eq!(
            c.lease,
            Lease {
                task_id: c.task.id,
                runner_id: runner,
                claim: 1
            }
        );
    }
    // The rows are as returned; the stale lease's task and the eighth are untouched.
    for row in completed.iter().chain([&failed]).chain(&claimed) {
        assert_eq!(&s.get(row.id).unwrap(), row);
    }
    assert_unchanged(s, &held[3].task);
    assert_unchanged(s, &tasks[7]);
    assert_eq!(held[3].task.started_at, Some(start));

    // One event per changed task, of its outcome, all of the runner at `now`, in task id order.
    let events = s.events_for_workflow(wf, None, 1_000).unwrap();
    let new = &events[events_before..];
    let expected: Vec<(Uuid, EventType, serde_json::Value)> = completed
        .iter()
        .map(|t| (t.id, EventType::Completed, counters(1, 1, 0)))
        .chain([(failed.id, EventType::Failed, {
            let mut data = counters(1, 1, 0);
            data["error"] = json!("boom");
            data
        })])
        .chain(
            claimed
                .iter()
                .map(|t| (t.id, EventType::Claimed, counters(1, 1, 0))),
        )
        .collect();
    cycle_events(&f, new, expected, (runner, now, wf));
    for row in completed.iter().chain([&failed]).chain(&claimed) {
        checked_history(&f, row);
    }
}

fn retrial(lease: Lease, error: &str, retry_at: chrono::DateTime<chrono::Utc>) -> RetriedTask {
    RetriedTask {
        lease,
        error: error.into(),
        retry_at,
    }
}

/// Retried tasks of a cycle: each with an attempt left is `Ready` again with `attempt + 1`,
/// its error and its retry time, exactly as `fail_and_retry` leaves it (not claimable by the
/// same cycle even when due); one on its last attempt fails; a stale lease is lost.
fn a_cycle_retries_failed_attempts_and_fails_the_last(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let mut retryable = ready_tasks(s, wf, 3, 2);
    retryable.sort_by_key(|t| t.id);
    f.tick();
    let one_attempt = |name: &str| {
        s.create(
            &dal_core::NewTaskExecution::new(wf, name)
                .with_status(Ready)
                .with_max_attempts(1),
        )
        .unwrap()
    };
    let last = one_attempt("last");
    let runner = Uuid::now_v7();
    let held = s.claim_ready(runner, 4).unwrap();
    let held: HashMap<Uuid, _> = held.into_iter().map(|c| (c.task.id, c)).collect();
    let (a, b, c, z) = (
        &held[&retryable[0].id],
        &held[&retryable[1].id],
        &held[&retryable[2].id],
        &held[&last.id],
    );
    f.tick();
    let fresh = one_attempt("fresh");
    let stale = Lease {
        claim: c.lease.claim + 1,
        ..c.lease
    };
    let events_before = s.events_for_workflow(wf, None, 1_000).unwrap().len();
    let now = f.tick();
    // `a` due at once (already past), `b` in an hour.
    let (soon, later) = (now - TimeDelta::minutes(1), now + TimeDelta::hours(1));
    let finished = Finished {
        completed: vec![],
        failed: vec![],
        retried: vec![
            retrial(b.lease, "exit code 3", later),
            retrial(z.lease, "out of attempts", soon),
            retrial(a.lease, "exit code 2", soon),
            retrial(stale, "never applied", soon),
        ],
    };
    let (cycle, counts) = f
        .log
        .measure(|| s.finish_and_claim(runner, &finished, 5).unwrap());
    let shape = kind.statement_counts();
    // Three retries, one of which fails instead (two writes where a backend writes each).
    assert_eq!(
        counts.statements,
        shape.cycle + 4 * shape.cycle_per_failure + shape.cycle_per_failure
    );

    let retried_as = |held: &dal_core::Claimed, error: &str, retry_at| TaskExecution {
        status: Ready,
        attempt: 2,
        retry_at: Some(retry_at),
        error_details: None,
        last_error: Some(error.into()),
        started_at: None,
        completed_at: None,
        claimed_by: None,
        heartbeat_at: None,
        updated_at: now,
        ..held.task.clone()
    };
    let mut retried = vec![
        retried_as(a, "exit code 2", soon),
        retried_as(b, "exit code 3", later),
    ];
    retried.sort_by_key(|t| t.id);
    let failed = TaskExecution {
        status: Failed,
        error_details: Some("out of attempts".into()),
        last_error: Some("out of attempts".into()),
        completed_at: Some(now),
        claimed_by: None,
        heartbeat_at: None,
        updated_at: now,
        ..z.task.clone()
    };
    let claimed = claimed_at(&fresh, runner, now);
    assert_eq!(cycle.retried, retried);
    assert_eq!(cycle.failed, vec![failed.clone()]);
    assert_eq!(cycle.completed, vec![]);
    assert_eq!(cycle.lost, vec![stale]);
    assert_eq!(
        cycle.claimed.iter().map(|c| &c.task).collect::<Vec<_>>(),
        vec![&claimed]
    );
    for row in retried.iter().chain([&failed, &claimed]) {
        assert_eq!(&s.get(row.id).unwrap(), row);
    }
    assert_unchanged(s, &c.task);

    let events = s.events_for_workflow(wf, None, 1_000).unwrap();
    let new = &events[events_before..];
    let retry_data = |at, error: &str| {
        let mut data = counters(2, 1, 0);
        data["retry_at"] = dal_core::event::time_value(at);
        data["error"] = json!(error);
        data
    };
    let expected: Vec<(Uuid, EventType, serde_json::Value)> = vec![
        (
            a.task.id,
            EventType::RetryScheduled,
            retry_data(soon, "exit code 2"),
        ),
        (
            b.task.id,
            EventType::RetryScheduled,
            retry_data(later, "exit code 3"),
        ),
        (z.task.id, EventType::Failed, {
            let mut data = counters(1, 1, 0);
            data["error"] = json!("out of attempts");
            data
        }),
        (fresh.id, EventType::Claimed, counters(1, 1, 0)),
    ];
    cycle_events(&f, new, expected, (runner, now, wf));
    for row in retried.iter().chain([&failed, &claimed]) {
        checked_history(&f, row);
    }

    // The retry that was due is claimable now, the other waits for its time.
    f.tick();
    let next = s.claim_ready(Uuid::now_v7(), 5).unwrap();
    assert_eq!(
        next.iter().map(|c| c.task.id).collect::<Vec<_>>(),
        vec![a.task.id]
    );
    assert_eq!(next[0].task.attempt, 2);
}

fn a_cycle_refuses_bad_input_and_writes_nothing(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    ready_tasks(s, wf, 4, 1);
    let runner = Uuid::now_v7();
    let held = s.claim_ready(runner, 3).unwrap();
    let other = Lease {
        runner_id: Uuid::now_v7(),
        ..held[0].lease
    };
    let before = s.list_for_workflow(wf).unwrap();
    let events = s.events_for_workflow(wf, None, 1_000).unwrap();
    let now = f.tick();
    let cases: Vec<(Finished, &str, Problem)> = vec![
        (
            Finished {
                retried: Vec::new(),
                completed: vec![held[1].lease, other],
                failed: vec![],
            },
            "finished.completed[1].runner_id",
            Problem::NotTheSameRunner,
        ),
        (
            Finished {
                retried: Vec::new(),
                completed: vec![held[1].lease],
                failed: vec![failure(other, "e")],
            },
            "finished.failed[0].lease.runner_id",
            Problem::NotTheSameRunner,
        ),
        (
            Finished {
                retried: Vec::new(),
                completed: vec![held[1].lease],
                failed: vec![failure(held[0].lease, "nul \0 inside")],
            },
            "finished.failed[0].error",
            Problem::ContainsNul,
        ),
        (
            Finished {
                retried: Vec::new(),
                completed: vec![held[1].lease, held[0].lease],
                failed: vec![failure(held[2].lease, "e"), failure(held[0].lease, "e")],
            },
            "finished.failed[1].lease.task_id",
            Problem::FinishedTwice {
                first: "finished.completed[1]".into(),
            },
        ),
        (
            Finished {
                retried: Vec::new(),
                completed: vec![],
                failed: vec![failure(held[2].lease, "a"), failure(held[2].lease, "b")],
            },
            "finished.failed[1].lease.task_id",
            Problem::FinishedTwice {
                first: "finished.failed[0]".into(),
            },
        ),
        (
            Finished {
                retried: Vec::new(),
                completed: vec![held[1].lease, held[0].lease, held[1].lease],
                failed: vec![],
            },
            "finished.completed[2].task_id",
            Problem::FinishedTwice {
                first: "finished.completed[0]".into(),
            },
        ),
        (
            // A stale lease beside the current one of its task: the task twice.
            Finished {
                retried: Vec::new(),
                completed: vec![
                    held[1].lease,
                    Lease {
                        claim: held[1].lease.claim - 1,
                        ..held[1].lease
                    },
                ],
                failed: vec![],
            },
            "finished.completed[1].task_id",
            Problem::FinishedTwice {
                first: "finished.completed[0]".into(),
            },
        ),
        (
            Finished {
                retried: vec![retrial(other, "e", now)],
                completed: vec![],
                failed: vec![],
            },
            "finished.retried[0].lease.runner_id",
            Problem::NotTheSameRunner,
        ),
        (
            Finished {
                retried: vec![
                    retrial(held[0].lease, "", now),
                    retrial(held[1].lease, "\0", now),
                ],
                completed: vec![],
                failed: vec![],
            },
            "finished.retried[1].error",
            Problem::ContainsNul,
        ),
        (
            Finished {
                retried: vec![retrial(
                    held[0].lease,
                    "e",
                    dal_core::validate::earliest_time() - chrono::TimeDelta::days(1),
                )],
                completed: vec![],
                failed: vec![],
            },
            "finished.retried[0].retry_at",
            Problem::TimeOutOfRange,
        ),
        (
            Finished {
                retried: vec![retrial(held[2].lease, "e", now)],
                completed: vec![],
                failed: vec![failure(held[2].lease, "e")],
            },
            "finished.retried[0].lease.task_id",
            Problem::FinishedTwice {
                first: "finished.failed[0]".into(),
            },
        ),
        (
            Finished {
                retried: vec![retrial(held[1].lease, "e", now)],
                completed: vec![held[1].lease],
                failed: vec![],
            },
            "finished.retried[0].lease.task_id",
            Problem::FinishedTwice {
                first: "finished.completed[0]".into(),
            },
        ),
    ];
    for (finished, field, problem) in cases {
        let (result, counts) = f.log.measure(|| s.finish_and_claim(runner, &finished, 5));
        match expect_err(result) {
            DalError::Validation(ValidationError {
                field: got,
                problem: got_problem,
            }) => assert_eq!((got.as_str(), got_problem), (field, problem)),
            other => panic!("{field}: {other:?}"),
        }
        assert_eq!(counts.statements, 0, "{field}");
    }
    assert_eq!(s.list_for_workflow(wf).unwrap(), before);
    assert_eq!(s.events_for_workflow(wf, None, 1_000).unwrap(), events);
}

fn a_cycle_that_only_claims_or_only_finishes(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let wf = workflow();
    let mut tasks = ready_tasks(s, wf, 3, 1);
    tasks.sort_by_key(|t| t.id);
    let runner = Uuid::now_v7();
    // Nothing to finish: a claim, as claim_ready makes it.
    let now = f.tick();
    let first = s.finish_and_claim(runner, &Finished::default(), 2).unwrap();
    assert!(first.completed.is_empty() && first.failed.is_empty() && first.lost.is_empty());
    let expected: Vec<TaskExecution> = tasks[..2]
        .iter()
        .map(|t| claimed_at(t, runner, now))
        .collect();
    assert_eq!(
        first
            .claimed
            .iter()
            .map(|c| c.task.clone())
            .collect::<Vec<_>>(),
        expected
    );
    // Nothing to claim (limit 0): only the finishing. A lease finished already is lost.
    s.complete(&first.claimed[1].lease).unwrap();
    let done_before = s.get(tasks[1].id).unwrap();
    let later = f.tick();
    let second = s
        .finish_and_claim(
            runner,
            &Finished {
                retried: Vec::new(),
                completed: vec![],
                failed: vec![
                    failure(first.claimed[0].lease, "late"),
                    failure(first.claimed[1].lease, "again"),
                ],
            },
            0,
        )
        .unwrap();
    assert_eq!(
        second.failed,
        vec![TaskExecution {
            status: Failed,
            error_details: Some("late".into()),
            last_error: Some("late".into()),
            completed_at: Some(later),
            claimed_by: None,
            heartbeat_at: None,
            updated_at: later,
            ..expected[0].clone()
        }]
    );
    assert_eq!(second.lost, vec![first.claimed[1].lease]);
    assert!(second.completed.is_empty() && second.claimed.is_empty());
    assert_unchanged(s, &done_before);
    assert_unchanged(s, &tasks[2]);
}

/// Runners cycling on one queue: every task finished once, by one claim at a time. Every
/// fifth task (by id) fails its first attempt and is retried by the cycle, every eleventh is
/// retried whatever its attempt (so its second, its last, fails), every seventh fails when not
/// retried; the others complete.
fn runners_cycling_together_finish_every_task_once(kind: Backend) {
    let f = Fixture::with(
        kind,
        Setup {
            pool_size: THREADS as u32,
            ..Setup::default()
        },
    );
    let wf = workflow();
    const TASKS: usize = 400;
    ready_tasks(f.store(), wf, TASKS, 2);
    let retry_at = f.now();
    let runners: Arc<Vec<Uuid>> = Arc::new((0..THREADS).map(|_| Uuid::now_v7()).collect());
    let results = {
        let runners = Arc::clone(&runners);
        on_threads(&f.store, move |i, store| {
            let runner = runners[i];
            let mut finished = Finished::default();
            let mut outcome: Vec<(Uuid, TaskStatus)> = Vec::new();
            let mut retries: Vec<Uuid> = Vec::new();
            loop {
                let cycle = store.finish_and_claim(runner, &finished, 8)?;
                assert!(cycle.lost.is_empty(), "{:?}", cycle.lost);
                outcome.extend(cycle.completed.iter().map(|t| (t.id, t.status)));
                outcome.extend(cycle.failed.iter().map(|t| (t.id, t.status)));
                retries.extend(cycle.retried.iter().map(|t| t.id));
                // Done when nothing was sent nor claimed: a retry sent is claimable next.
                if cycle.claimed.is_empty() && finished.is_empty() {
                    return Ok::<_, DalError>((outcome, retries));
                }
                finished = Finished::default();
                for c in cycle.claimed {
                    let id = c.task.id.as_u128();
                    if id % 11 == 0 || (id % 5 == 0 && c.task.attempt == 1) {
                        finished.retried.push(retrial(c.lease, "flaky", retry_at));
                    } else if id % 7 == 0 {
                        finished.failed.push(failure(c.lease, "seventh"));
                    } else {
                        finished.completed.push(c.lease);
                    }
                }
            }
        })
    };
    let mut finished_by: HashMap<Uuid, TaskStatus> = HashMap::new();
    let mut retried: Vec<Uuid> = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        let (outcome, retries) = result.unwrap_or_else(|e| panic!("{kind}: runner {i}: {e:?}"));
        for (id, status) in outcome {
            assert!(
                finished_by.insert(id, status).is_none(),
                "{kind}: {id} finished twice"
            );
        }
        retried.extend(retries);
    }
    assert_eq!(finished_by.len(), TASKS);
    let rows = f.store.list_for_workflow(wf).unwrap();
    let mut want_retried: Vec<Uuid> = rows
        .iter()
        .map(|row| row.id)
        .filter(|id| id.as_u128() % 5 == 0 || id.as_u128() % 11 == 0)
        .collect();
    want_retried.sort();
    retried.sort();
    assert_eq!(retried, want_retried, "{kind}: each retried once");
    for row in rows {
        let id = row.id.as_u128();
        let twice = id % 5 == 0 || id % 11 == 0;
        let want = if id % 11 == 0 || id % 7 == 0 {
            Failed
        } else {
            Completed
        };
        assert_eq!((row.status, finished_by.get(&row.id)), (want, Some(&want)));
        let attempts = if twice { 2 } else { 1 };
        assert_eq!((row.claim_count, row.attempt), (attempts, attempts));
        let events = checked_history(&f, &row);
        let last = if want == Failed {
            EventType::Failed
        } else {
            EventType::Completed
        };
        let expected: Vec<EventType> = if twice {
            vec![
                EventType::Created,
                EventType::Claimed,
                EventType::RetryScheduled,
                EventType::Claimed,
                last,
            ]
        } else {
            vec![EventType::Created, EventType::Claimed, last]
        };
        if f.keeps_history() {
            assert_eq!(
                events.iter().map(|e| e.event_type).collect::<Vec<_>>(),
                expected
            );
        }
    }
}
