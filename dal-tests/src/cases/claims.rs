//! The runner protocol: claims (`claim_ready`, a dispatcher's `claim_task`), leases,
//! heartbeats, fenced completion, the runner cycle (`finish_and_claim`), crash recovery.

use std::collections::HashMap;
use std::fmt::Debug;

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::event::time_value;
use dal_core::{
    Claimed, Clock, Completion, Cycle, DalError, EventType, FailedTask, Finished, Lease,
    NewTaskExecution, Problem, Recovery, RetriedTask, TaskExecution, TaskExecutionStore,
    TaskStatus::*,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::support::{
    assert_unchanged, checked_history, expect_err, on_threads, ready_tasks, task_in, workflow,
};
use crate::case;
use crate::model::{Failure, counters};
use crate::operations::Operation;
use crate::suite::{Backend, Case, Fixture};

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(claims_and_listings_take_due_ready_tasks_oldest_first),
    case!(claim_task_claims_the_given_task_or_says_why_not),
    case!(calls_under_a_lease_need_the_current_claim),
    case!(fail_and_retry_queues_the_next_attempt_under_the_lease),
    case!(complete_many_completes_the_leases_that_still_hold),
    case!(a_sweep_resets_the_claims_still_stale_and_their_runners_lose_them),
    case!(a_dead_runners_task_is_reset_until_the_cap_then_abandoned),
    case!(a_cycle_refuses_bad_input_or_finishes_retries_and_claims_as_one_change),
    case!(a_cycle_that_only_claims_or_only_finishes),
    case!(runners_cycling_together_finish_every_task_once),
];

type Time = DateTime<Utc>;

/// The staleness threshold the sweeper uses in these cases.
const STALE_AFTER: TimeDelta = TimeDelta::seconds(30);

fn runner() -> Uuid {
    Uuid::now_v7()
}

/// `before` (`Ready`) as a claim by `runner` at `now` leaves it, with the claim's lease.
fn claimed(before: &TaskExecution, runner: Uuid, now: Time) -> Claimed {
    let task = TaskExecution {
        status: Running,
        claimed_by: Some(runner),
        heartbeat_at: Some(now),
        started_at: Some(now),
        claim_count: before.claim_count + 1,
        updated_at: now,
        ..before.clone()
    };
    let (task_id, claim) = (task.id, task.claim_count);
    let lease = Lease { task_id, runner_id: runner, claim };
    assert_eq!(task.lease(), Some(lease));
    Claimed { task, lease }
}

/// `before` (claimed) completed at `now`.
fn completed(before: &TaskExecution, now: Time) -> TaskExecution {
    TaskExecution {
        status: Completed,
        completed_at: Some(now),
        claimed_by: None,
        heartbeat_at: None,
        updated_at: now,
        ..before.clone()
    }
}

/// `before` (claimed) failed with `error` at `now`.
fn failed(before: &TaskExecution, error: &str, now: Time) -> TaskExecution {
    TaskExecution {
        status: Failed,
        error_details: Some(error.into()),
        last_error: Some(error.into()),
        ..completed(before, now)
    }
}

/// `before` (claimed) given back at `now`: `Ready`, the same attempt.
fn released(before: &TaskExecution, now: Time) -> TaskExecution {
    TaskExecution {
        status: Ready,
        claimed_by: None,
        heartbeat_at: None,
        started_at: None,
        updated_at: now,
        ..before.clone()
    }
}

/// `before` (claimed) reset by a sweep at `now`.
fn reset(before: &TaskExecution, now: Time) -> TaskExecution {
    TaskExecution {
        recovery_attempts: before.recovery_attempts + 1,
        last_recovery_at: Some(now),
        ..released(before, now)
    }
}

/// `before` (claimed) failed with `error` at `now`, its next attempt due at `at`.
fn retried(before: &TaskExecution, error: &str, at: Time, now: Time) -> TaskExecution {
    TaskExecution {
        attempt: before.attempt + 1,
        retry_at: Some(at),
        error_details: None,
        last_error: Some(error.into()),
        ..released(before, now)
    }
}

/// The error `result` failed with, as the model names it.
fn failure<T: Debug>(result: Result<T, DalError>) -> Failure {
    Failure::from(expect_err(result))
}

/// Asserts that `result` failed with `want`, and that `row` is unchanged.
fn refused<T: Debug>(
    s: &dyn TaskExecutionStore,
    result: dal_core::Result<T>,
    want: Failure,
    row: &TaskExecution,
) {
    assert_eq!(failure(result), want);
    assert_unchanged(s, row);
}

/// Asserts that every call under `lease` is refused as lost, leaving `row` unchanged.
fn stale_lease(s: &dyn TaskExecutionStore, lease: &Lease, row: &TaskExecution) {
    let lost = || Failure::ClaimLost(row.id);
    let late = row.updated_at;
    refused(s, s.heartbeat(lease), lost(), row);
    refused(s, s.complete(lease), lost(), row);
    refused(s, s.fail(lease, "late"), lost(), row);
    refused(s, s.fail_and_retry(lease, "late", late), lost(), row);
    refused(s, s.release(lease), lost(), row);
}

/// Asserts that `call` is refused as `field`'s `problem`, before anything is sent.
fn invalid<T: Debug>(
    f: &Fixture,
    call: impl FnOnce() -> dal_core::Result<T>,
    field: &str,
    problem: Problem,
) {
    let (result, counts) = f.log.measure(call);
    let want = Failure::Validation(field.into(), problem);
    assert_eq!((failure(result), counts.statements), (want, 0), "{field}");
}

/// Asserts that `row`'s history replays to it and ends with an event of `event_type` with
/// `data`, by `runner`, at the row's last change (no event with the history off).
fn last_event(f: &Fixture, row: &TaskExecution, event_type: EventType, data: Value, runner: Uuid) {
    if let Some(last) = checked_history(f, row).pop() {
        let got = (last.event_type, last.event_data, last.runner_id, last.created_at);
        let want = (event_type, data, Some(runner), row.updated_at);
        assert_eq!(got, want);
    }
}

/// The data of a failure's event: the counters and the error.
fn failure_data(counters: Value, error: &str) -> Value {
    let mut data = counters;
    data["error"] = json!(error);
    data
}

/// The data of a retry's event: the counters (attempt 2, claim 1), the retry time, the error.
fn retry_data(at: Time, error: &str) -> Value {
    let mut data = failure_data(counters(2, 1, 0), error);
    data["retry_at"] = time_value(at);
    data
}

fn names(rows: impl IntoIterator<Item = TaskExecution>) -> Vec<String> {
    rows.into_iter().map(|row| row.task_name).collect()
}

fn ids(claims: &[Claimed]) -> Vec<Uuid> {
    claims.iter().map(|c| c.task.id).collect()
}

fn claims_and_listings_take_due_ready_tasks_oldest_first(kind: Backend) {
    let f = Fixture::new(kind);
    let (s, wf, r) = (f.store(), workflow(), runner());
    let ready = |name: &str, due_in: Option<i64>| NewTaskExecution {
        retry_at: due_in.map(|secs| f.clock.now() + TimeDelta::seconds(secs)),
        ..NewTaskExecution::new(wf, name).with_status(Ready)
    };
    let not_started = |name: &str| NewTaskExecution::new(wf, name);
    let created = s
        .create_many(&[
            ready("fresh-1", None),
            ready("later", Some(10)),
            ready("retry-due", Some(-10)),
            not_started("not-started"),
            ready("fresh-2", None),
            ready("retry-now", Some(0)),
            ready("much-later", Some(300)),
            not_started("never-started"),
        ])
        .unwrap();
    let claim = |limit| names(s.claim_ready(r, limit).unwrap().into_iter().map(|c| c.task));
    let due = ["fresh-1", "retry-due", "fresh-2", "retry-now"];
    assert_eq!(names(s.list_ready(10).unwrap()), due);
    assert_eq!(names(s.list_ready(2).unwrap()), due[..2]);
    assert_eq!(names(s.list_due_retries(10).unwrap()), [due[1], due[3]]);
    assert_eq!(s.list_ready(1).unwrap(), [created[0].clone()]);
    let (none, counts) = f.log.measure(|| (s.list_ready(0).unwrap(), claim(0)));
    assert!(none.0.is_empty() && none.1.is_empty() && counts.statements == 0);
    // The claim takes the oldest due tasks.
    let now = f.tick();
    let first = s.claim_ready(r, 2).unwrap();
    assert_eq!(first, [claimed(&created[0], r, now), claimed(&created[2], r, now)]);
    for claim in &first {
        assert_unchanged(s, &claim.task);
    }
    // Once due, the delayed task queues behind the tasks due before it, although its id is
    // older than theirs; a task made ready now queues behind every task already due.
    f.clock.advance(TimeDelta::seconds(10));
    let retries = names(s.list_due_retries(10).unwrap());
    assert_eq!(retries, ["retry-now", "later"]);
    s.mark_ready(created[3].id).unwrap();
    let queue = ["fresh-2", "retry-now", "later", "not-started"];
    assert_eq!(names(s.list_ready(10).unwrap()), queue);
    // Claims take the queue's head, and return it by id.
    assert_eq!(claim(2), queue[..2]);
    assert_eq!(claim(10), ["later", "not-started"]);
    // Nothing due: one statement, nothing claimed; the others wait until due (or forever).
    let (none, counts) = f.log.measure(|| claim(10));
    let statements = kind.statements(Operation::ClaimNoneReady);
    assert!(none.is_empty() && counts.statements == statements);
    assert_unchanged(s, &created[6]);
    assert_unchanged(s, &created[7]);
    f.clock.set(created[6].retry_at.unwrap());
    assert_eq!(claim(10), ["much-later"]);
}

fn claim_task_claims_the_given_task_or_says_why_not(kind: Backend) {
    let f = Fixture::new(kind);
    let (s, wf, r) = (f.store(), workflow(), runner());
    // "older" is first in claim_ready's order; the dispatcher picks "picked".
    let older = ready_tasks(s, wf, 1, 1).remove(0);
    f.tick();
    let picked = s.create(&NewTaskExecution::new(wf, "picked").with_status(Ready));
    let picked = picked.unwrap();
    let now = f.tick();
    let (claim, counts) = f.log.measure(|| s.claim_task(picked.id, r).unwrap());
    assert_eq!(counts.statements, kind.statements(Operation::ClaimTask));
    assert_eq!(claim, claimed(&picked, r, now));
    assert_unchanged(s, &claim.task);
    assert_unchanged(s, &older);
    last_event(&f, &claim.task, EventType::Claimed, counters(1, 1, 0), r);
    // Refused (a guarded write and the read that explains it; nothing changed): a task
    // claimed already, by another runner or by the caller; not due; in another status.
    let refuse = |task: &TaskExecution, by: Uuid, want: Failure| {
        let events = s.events_for_task(task.id).unwrap();
        let (result, counts) = f.log.measure(|| s.claim_task(task.id, by));
        let statements = kind.statements(Operation::ClaimTaskRejected);
        assert_eq!((failure(result), counts.statements), (want, statements));
        assert_unchanged(s, task);
        assert_eq!(s.events_for_task(task.id).unwrap(), events);
    };
    for by in [r, runner()] {
        refuse(&claim.task, by, Failure::AlreadyClaimed(picked.id, r));
    }
    let retry_at = Some(f.clock.now() + TimeDelta::minutes(5));
    let new = NewTaskExecution::new(wf, "delayed").with_status(Ready);
    let delayed = s.create(&NewTaskExecution { retry_at, ..new }).unwrap();
    let due = delayed.retry_at.unwrap();
    refuse(&delayed, r, Failure::NotDue(delayed.id, due));
    for status in [NotStarted, Running, Completed, Failed, Skipped] {
        let task = task_in(s, wf, &format!("{status}"), status, 1);
        let want = Failure::InvalidTransition(task.id, status, Running);
        refuse(&task, r, want);
    }
    let missing = Uuid::now_v7();
    let result = s.claim_task(missing, r);
    assert_eq!(failure(result), Failure::NotFound(missing));
    // The lease works as any claim's, and claim_ready no longer sees the task.
    let now = f.tick();
    let beat = s.heartbeat(&claim.lease).unwrap();
    assert_eq!(beat.heartbeat_at, Some(now));
    assert_eq!(ids(&s.claim_ready(runner(), 10).unwrap()), [older.id]);
    assert_eq!(s.complete(&claim.lease).unwrap(), completed(&beat, now));
    // The delayed task is claimable once due.
    f.clock.set(due);
    let claim = s.claim_task(delayed.id, r).unwrap();
    assert_eq!(claim, claimed(&delayed, r, due));
}

fn calls_under_a_lease_need_the_current_claim(kind: Backend) {
    let f = Fixture::new(kind);
    let (s, r) = (f.store(), runner());
    ready_tasks(s, workflow(), 3, 2);
    let c = s.claim_ready(r, 3).unwrap();
    let l = c[0].lease;
    // A heartbeat moves only heartbeat_at. A lease of another runner or of another claim is
    // lost for every call; an unknown task is not found.
    let now = f.tick();
    let beat = s.heartbeat(&l).unwrap();
    let (heartbeat_at, updated_at) = (Some(now), now);
    let moved = TaskExecution { heartbeat_at, updated_at, ..c[0].task.clone() };
    assert_eq!(beat, moved);
    f.tick();
    let (runner_id, task_id) = (runner(), Uuid::now_v7());
    for wrong in [Lease { runner_id, ..l }, Lease { claim: 2, ..l }, Lease { claim: 0, ..l }] {
        stale_lease(s, &wrong, &beat);
    }
    let unknown = Lease { task_id, ..l };
    assert_eq!(failure(s.heartbeat(&unknown)), Failure::NotFound(task_id));
    // Completing ends the claim: the lease no longer holds.
    let now = f.tick();
    let done = s.complete(&l).unwrap();
    assert_eq!(done, completed(&beat, now));
    stale_lease(s, &l, &done);
    // Failing keeps the error; an error with a NUL is refused.
    let now = f.tick();
    let gone = s.fail(&c[1].lease, "exit code 2").unwrap();
    assert_eq!(gone, failed(&c[1].task, "exit code 2", now));
    let nul = Failure::Validation("error".into(), Problem::ContainsNul);
    refused(s, s.fail(&c[1].lease, "bad\0"), nul, &gone);
    // Releasing gives the task back without counting an attempt: the lease no longer holds.
    // Claimed again by the same runner, the task has a new claim number.
    let now = f.tick();
    let back = s.release(&c[2].lease).unwrap();
    assert_eq!(back, released(&c[2].task, now));
    stale_lease(s, &c[2].lease, &back);
    let again = s.claim_ready(r, 1).unwrap().remove(0);
    assert_eq!(again.lease, Lease { claim: 2, ..c[2].lease });
    stale_lease(s, &c[2].lease, &again.task);
}

fn fail_and_retry_queues_the_next_attempt_under_the_lease(kind: Backend) {
    let f = Fixture::new(kind);
    let (s, r) = (f.store(), runner());
    ready_tasks(s, workflow(), 1, 2);
    let c = s.claim_ready(r, 1).unwrap().remove(0);
    let (l, row) = (c.lease, &c.task);
    let max = dal_core::validate::MESSAGE_MAX_BYTES;
    let (len, unit) = (max + 1, "bytes");
    let early = dal_core::validate::earliest_time() - TimeDelta::days(1);
    for (error, at, field, problem) in [
        ("bad\0", f.now(), "error", Problem::ContainsNul),
        ("x".repeat(len).as_str(), f.now(), "error", Problem::TooLong { max, len, unit }),
        ("e", early, "retry_at", Problem::TimeOutOfRange),
    ] {
        invalid(&f, || s.fail_and_retry(&l, error, at), field, problem);
        assert_unchanged(s, row);
    }
    let runner_id = runner();
    for wrong in [Lease { runner_id, ..l }, Lease { claim: 0, ..l }] {
        let result = s.fail_and_retry(&wrong, "e", f.now());
        refused(s, result, Failure::ClaimLost(row.id), row);
    }
    let now = f.tick();
    let retry_at = now + TimeDelta::seconds(30);
    let queued = s.fail_and_retry(&l, "exit code 2", retry_at).unwrap();
    assert_eq!(queued, retried(row, "exit code 2", retry_at, now));
    assert_unchanged(s, &queued);
    let data = retry_data(retry_at, "exit code 2");
    last_event(&f, &queued, EventType::RetryScheduled, data, r);
    // Not due before `retry_at`; the claim ended with the retry.
    assert!(s.claim_ready(r, 1).unwrap().is_empty());
    stale_lease(s, &l, &queued);
    // Due at `retry_at`, claimed again: the last attempt cannot be retried.
    f.clock.advance(TimeDelta::seconds(30));
    let again = s.claim_ready(r, 1).unwrap().remove(0);
    assert_eq!((again.task.id, again.task.attempt), (row.id, 2));
    let result = s.fail_and_retry(&again.lease, "e", f.now());
    refused(s, result, Failure::RetriesExhausted(row.id, 2, 2), &again.task);
    // An unknown task is not found.
    let task_id = Uuid::now_v7();
    let result = s.fail_and_retry(&Lease { task_id, ..l }, "e", f.now());
    assert_eq!(failure(result), Failure::NotFound(task_id));
}

fn complete_many_completes_the_leases_that_still_hold(kind: Backend) {
    let f = Fixture::new(kind);
    let (s, r) = (f.store(), runner());
    ready_tasks(s, workflow(), 6, 1);
    let c = s.claim_ready(r, 6).unwrap();
    // Lease 2 is stale (released, claimed again); task 3 is completed already.
    s.release(&c[2].lease).unwrap();
    let again = s.claim_ready(r, 1).unwrap().remove(0);
    let done = s.complete(&c[3].lease).unwrap();
    let batch: Vec<Lease> = c.iter().map(|c| c.lease).collect();
    let now = f.tick();
    let (completion, counts) = f.log.measure(|| s.complete_many(&batch).unwrap());
    let statements = kind.statements(Operation::CompleteMany30);
    assert_eq!(counts.statements, statements);
    let completed: Vec<_> = [0, 1, 4, 5].map(|i| completed(&c[i].task, now)).into();
    let lost = vec![c[2].lease, c[3].lease];
    assert_eq!(completion, Completion { completed, lost });
    for row in &completion.completed {
        assert_unchanged(s, row);
        last_event(&f, row, EventType::Completed, counters(1, 1, 0), r);
    }
    assert_unchanged(s, &again.task);
    assert_unchanged(s, &done);
    // Refused before anything is sent: a batch of two runners; a task twice, by one lease or
    // by a stale lease beside the current one (neither could come back on its own).
    ready_tasks(s, workflow(), 2, 1);
    let mine = s.claim_ready(r, 1).unwrap().remove(0);
    let theirs = s.claim_ready(runner(), 1).unwrap().remove(0);
    let (m, t, a) = (mine.lease, theirs.lease, again.lease);
    let stale = Lease { claim: 0, ..m };
    let twice = || Problem::FinishedTwice { first: "leases[0]".into() };
    for (batch, field, problem) in [
        (vec![m, t], "leases[1].runner_id", Problem::NotTheSameRunner),
        (vec![m, m], "leases[1].task_id", twice()),
        (vec![stale, a, m], "leases[2].task_id", twice()),
    ] {
        invalid(&f, || s.complete_many(&batch), field, problem);
    }
    assert_unchanged(s, &mine.task);
    assert_unchanged(s, &theirs.task);
    let (empty, counts) = f.log.measure(|| s.complete_many(&[]).unwrap());
    assert_eq!((empty, counts.statements), (Completion::default(), 0));
}

fn a_sweep_resets_the_claims_still_stale_and_their_runners_lose_them(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    ready_tasks(s, workflow(), 7, 1);
    let lease_less = task_in(s, workflow(), "running-without-claim", Running, 1);
    let (crashed, alive) = (runner(), runner());
    let doomed = s.claim_ready(crashed, 3).unwrap();
    let live = s.claim_ready(alive, 4).unwrap();
    let rows = |claims: &[Claimed]| claims.iter().map(|c| c.task.clone()).collect::<Vec<_>>();
    // The sweeper computes its threshold: every claim looks stale (a task running without a
    // claim has no heartbeat to judge)...
    f.clock.advance(TimeDelta::seconds(45));
    let threshold = f.now() - STALE_AFTER;
    let all = [rows(&doomed), rows(&live)].concat();
    assert_eq!(s.find_stale_claims(threshold).unwrap(), all);
    // ...but before its statements run, the live runner completes a task, fails one, releases
    // one and claims it again, and heart-beats one.
    s.release(&live[2].lease).unwrap();
    let kept = [
        s.complete(&live[0].lease).unwrap(),
        s.fail(&live[1].lease, "boom").unwrap(),
        s.claim_ready(alive, 1).unwrap().remove(0).task,
        s.heartbeat(&live[3].lease).unwrap(),
        lease_less,
    ];
    assert_eq!(kept[2].id, live[2].task.id);
    assert_eq!(s.find_stale_claims(threshold).unwrap(), rows(&doomed));
    let now = f.now();
    let recovery = s.recover_stale_claims(threshold, 5).unwrap();
    let (reset, abandoned) = (doomed.iter().map(|c| reset(&c.task, now)).collect(), vec![]);
    assert_eq!(recovery, Recovery { reset, abandoned });
    for row in &kept {
        assert_unchanged(s, row);
    }
    assert!(s.find_stale_claims(threshold).unwrap().is_empty());
    // The crashed runner comes back under its id and claims the tasks again: new claims. Its
    // old leases are refused, before and after the new claims complete.
    let takeover = s.claim_ready(crashed, 10).unwrap();
    assert_eq!(ids(&takeover), ids(&doomed));
    for (new, old) in takeover.iter().zip(&doomed) {
        assert_eq!(new.lease, Lease { claim: 2, ..old.lease });
        stale_lease(s, &old.lease, &new.task);
        stale_lease(s, &old.lease, &s.complete(&new.lease).unwrap());
    }
}

fn a_dead_runners_task_is_reset_until_the_cap_then_abandoned(kind: Backend) {
    let f = Fixture::new(kind);
    let s = f.store();
    let task = ready_tasks(s, workflow(), 1, 1).remove(0);
    const CAP: i32 = 3;
    let reason =
        "abandoned: its runner stopped heart-beating and the task was already recovered 3 times";
    // A dispatcher hands the task to a runner that dies, again and again: the sweeper resets
    // it each time (the dead runner's lease is lost), until the cap abandons it.
    for round in 1..=CAP + 1 {
        let dead = s.claim_task(task.id, runner()).unwrap();
        let claims = (dead.lease.claim, dead.task.recovery_attempts);
        assert_eq!(claims, (round, round - 1));
        f.clock.advance(TimeDelta::minutes(1));
        let now = f.now();
        let recovery = s.recover_stale_claims(now - STALE_AFTER, CAP).unwrap();
        let abandoned_at = Some(now);
        let (reset, abandoned) = match round {
            ..=CAP => (vec![reset(&dead.task, now)], vec![]),
            _ => (vec![], vec![TaskExecution { abandoned_at, ..failed(&dead.task, reason, now) }]),
        };
        let row = reset.iter().chain(&abandoned).next().unwrap().clone();
        assert_eq!(recovery, Recovery { reset, abandoned });
        stale_lease(s, &dead.lease, &row);
    }
    let row = s.get(task.id).unwrap();
    assert!(row.is_abandoned());
    checked_history(&f, &row);
    assert!(s.claim_ready(runner(), 1).unwrap().is_empty());
    // With a cap of 0, a stale task is abandoned at once; a negative cap is refused.
    ready_tasks(s, workflow(), 1, 1);
    s.claim_ready(runner(), 1).unwrap();
    f.clock.advance(TimeDelta::minutes(1));
    let recovery = s.recover_stale_claims(f.now() - STALE_AFTER, 0).unwrap();
    assert_eq!((recovery.reset.len(), recovery.abandoned.len()), (0, 1));
    let (min, max, value) = (0, i32::MAX.into(), -1);
    let call = || s.recover_stale_claims(f.now(), -1);
    invalid(&f, call, "max_recovery_attempts", Problem::OutOfRange { min, max, value });
}

/// A runner cycle's finished tasks: `completed`, `failed` with their errors, `retried` with
/// their errors and retry times.
fn finished(done: &[Lease], failed: &[(Lease, &str)], retried: &[(Lease, &str, Time)]) -> Finished {
    let failed = failed.iter().map(|&(lease, e)| {
        let error = e.into();
        FailedTask { lease, error }
    });
    let retried = retried.iter().map(|&(lease, e, retry_at)| {
        let error = e.into();
        RetriedTask { lease, error, retry_at }
    });
    let (failed, retried) = (failed.collect(), retried.collect());
    Finished { completed: done.to_vec(), failed, retried }
}

/// Bad input refused before anything is sent. Then one cycle: completions and failures;
/// retries (one on its last attempt, which fails instead; a due one is not claimable by the
/// same cycle); a stale lease in two lists, lost; a claim of the next task. The rows and their
/// events, one per changed task in task id order, are written as one change.
fn a_cycle_refuses_bad_input_or_finishes_retries_and_claims_as_one_change(kind: Backend) {
    let f = Fixture::new(kind);
    let (s, wf, r) = (f.store(), workflow(), runner());
    // Eight tasks of one batch (claimed in id order) with two attempts, then one with one.
    let mut tasks = ready_tasks(s, wf, 8, 2);
    tasks.sort_by_key(|t| t.id);
    f.tick();
    let one_attempt = |name: &str| {
        let new = NewTaskExecution::new(wf, name).with_status(Ready);
        s.create(&new.with_max_attempts(1)).unwrap()
    };
    tasks.push(one_attempt("last"));
    let h = s.claim_ready(r, 9).unwrap();
    assert_eq!(ids(&h), tasks.iter().map(|t| t.id).collect::<Vec<_>>());
    let (h0, h1, h2) = (h[0].lease, h[1].lease, h[2].lease);
    let runner_id = runner();
    let other = Lease { runner_id, ..h0 };
    let rows = s.list_for_workflow(wf).unwrap();
    let events = s.events_for_workflow(wf, None, 1_000).unwrap();
    let now = f.tick();
    let early = dal_core::validate::earliest_time() - TimeDelta::days(1);
    let twice = |first: &str| Problem::FinishedTwice { first: format!("finished.{first}") };
    let (not_same, nul) = (|| Problem::NotTheSameRunner, || Problem::ContainsNul);
    for (batch, field, problem) in [
        (finished(&[h1, other], &[], &[]), "completed[1].runner_id", not_same()),
        (finished(&[h1], &[(other, "e")], &[]), "failed[0].lease.runner_id", not_same()),
        (finished(&[h1], &[(h0, "nul \0 inside")], &[]), "failed[0].error", nul()),
        (
            finished(&[h1, h0], &[(h2, "e"), (h0, "e")], &[]),
            "failed[1].lease.task_id",
            twice("completed[1]"),
        ),
        (
            finished(&[], &[(h2, "a"), (h2, "b")], &[]),
            "failed[1].lease.task_id",
            twice("failed[0]"),
        ),
        (finished(&[h1, h0, h1], &[], &[]), "completed[2].task_id", twice("completed[0]")),
        // A stale lease beside the current one of its task: the task twice.
        (
            finished(&[h1, Lease { claim: 0, ..h1 }], &[], &[]),
            "completed[1].task_id",
            twice("completed[0]"),
        ),
        (finished(&[], &[], &[(other, "e", now)]), "retried[0].lease.runner_id", not_same()),
        (finished(&[], &[], &[(h0, "", now), (h1, "\0", now)]), "retried[1].error", nul()),
        (finished(&[], &[], &[(h0, "e", early)]), "retried[0].retry_at", Problem::TimeOutOfRange),
        (
            finished(&[], &[(h2, "e")], &[(h2, "e", now)]),
            "retried[0].lease.task_id",
            twice("failed[0]"),
        ),
        (
            finished(&[h1], &[], &[(h1, "e", now)]),
            "retried[0].lease.task_id",
            twice("completed[0]"),
        ),
    ] {
        let call = || s.finish_and_claim(r, &batch, 5);
        invalid(&f, call, &format!("finished.{field}"), problem);
    }
    assert_eq!(s.list_for_workflow(wf).unwrap(), rows);
    assert_eq!(s.events_for_workflow(wf, None, 1_000).unwrap(), events);

    let fresh = one_attempt("fresh");
    let stale = |i: usize| Lease { claim: 2, ..h[i].lease };
    let now = f.tick();
    let (soon, later) = (now - TimeDelta::minutes(1), now + TimeDelta::hours(1));
    let batch = finished(
        &[h1, h0, stale(3)],
        &[(h2, "boom")],
        &[
            (h[6].lease, "exit code 3", later),
            (h[8].lease, "out of attempts", soon),
            (h[4].lease, "exit code 2", soon),
            (stale(7), "never applied", soon),
        ],
    );
    let (cycle, counts) = f.log.measure(|| s.finish_and_claim(r, &batch, 5).unwrap());
    // One failure, four retries; two of them (the last attempt, the stale lease) are tried as
    // failures too, where a backend writes each failure.
    let shape = kind.statement_counts();
    assert_eq!(counts.statements, shape.cycle + 7 * shape.cycle_per_failure);
    let want = Cycle {
        completed: vec![completed(&h[0].task, now), completed(&h[1].task, now)],
        failed: vec![failed(&h[2].task, "boom", now), failed(&h[8].task, "out of attempts", now)],
        retried: vec![
            retried(&h[4].task, "exit code 2", soon, now),
            retried(&h[6].task, "exit code 3", later, now),
        ],
        lost: vec![stale(3), stale(7)],
        claimed: vec![claimed(&fresh, r, now)],
    };
    assert_eq!(cycle, want);
    for untouched in [&h[3], &h[5], &h[7]] {
        assert_unchanged(s, &untouched.task);
    }
    let (done, failure) = (counters(1, 1, 0), |e| failure_data(counters(1, 1, 0), e));
    let (c, fl, rt) = (&want.completed, &want.failed, &want.retried);
    let (completion, failing, retry) =
        (EventType::Completed, EventType::Failed, EventType::RetryScheduled);
    let mut changed = vec![];
    for (row, event_type, data) in [
        (&c[0], completion, done.clone()),
        (&c[1], completion, done.clone()),
        (&fl[0], failing, failure("boom")),
        (&fl[1], failing, failure("out of attempts")),
        (&rt[0], retry, retry_data(soon, "exit code 2")),
        (&rt[1], retry, retry_data(later, "exit code 3")),
        (&want.claimed[0].task, EventType::Claimed, done),
    ] {
        assert_unchanged(s, row);
        last_event(&f, row, event_type, data, r);
        changed.push(row.id);
    }
    // One event per changed task, in task id order.
    let events = s.events_for_workflow(wf, None, 1_000).unwrap();
    let new: Vec<_> = events.iter().filter(|e| e.created_at == now).collect();
    assert!(new.iter().all(|e| e.workflow_execution_id == wf));
    let new: Vec<Uuid> = new.iter().map(|e| e.task_execution_id).collect();
    changed.sort();
    changed.retain(|_| f.keeps_history());
    assert_eq!(new, changed);
    // The retry that was due is claimable now, the other waits for its time.
    f.tick();
    let next = s.claim_ready(runner(), 5).unwrap();
    assert_eq!((ids(&next), next[0].task.attempt), (vec![h[4].task.id], 2));
}

fn a_cycle_that_only_claims_or_only_finishes(kind: Backend) {
    let f = Fixture::new(kind);
    let (s, r) = (f.store(), runner());
    let mut tasks = ready_tasks(s, workflow(), 3, 1);
    tasks.sort_by_key(|t| t.id);
    // Nothing to finish: a claim, as claim_ready makes it.
    let now = f.tick();
    let first = s.finish_and_claim(r, &Finished::default(), 2).unwrap();
    let claimed = vec![claimed(&tasks[0], r, now), claimed(&tasks[1], r, now)];
    assert_eq!(first, Cycle { claimed, ..Cycle::default() });
    // Nothing to claim (limit 0): only the finishing. A lease finished already is lost.
    let (c0, c1) = (&first.claimed[0], &first.claimed[1]);
    let done = s.complete(&c1.lease).unwrap();
    let later = f.tick();
    let batch = finished(&[], &[(c0.lease, "late"), (c1.lease, "again")], &[]);
    let second = s.finish_and_claim(r, &batch, 0).unwrap();
    let (failed, lost) = (vec![failed(&c0.task, "late", later)], vec![c1.lease]);
    assert_eq!(second, Cycle { failed, lost, ..Cycle::default() });
    assert_unchanged(s, &done);
    assert_unchanged(s, &tasks[2]);
}

/// Runners cycling on one queue: every task finished once, by one claim at a time. Every
/// fifth task (by id) fails its first attempt and is retried by the cycle, every eleventh is
/// retried whatever its attempt (so its second, its last, fails), every seventh fails when not
/// retried; the others complete.
fn runners_cycling_together_finish_every_task_once(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    const TASKS: usize = 400;
    ready_tasks(f.store(), wf, TASKS, 2);
    let retry_at = f.now();
    let every = |n: u128, id: Uuid| id.as_u128().is_multiple_of(n);
    let results = on_threads(&f.store, move |_, store| {
        let runner = Uuid::now_v7();
        let (mut batch, mut outcome, mut retries) = (Finished::default(), vec![], vec![]);
        loop {
            let cycle = store.finish_and_claim(runner, &batch, 8)?;
            assert!(cycle.lost.is_empty(), "{:?}", cycle.lost);
            let ended = cycle.completed.iter().chain(&cycle.failed);
            outcome.extend(ended.map(|t| (t.id, t.status)));
            retries.extend(cycle.retried.iter().map(|t| t.id));
            // Done when nothing was sent nor claimed: a retry sent is claimable next.
            if cycle.claimed.is_empty() && batch.is_empty() {
                return Ok::<_, DalError>((outcome, retries));
            }
            let leases = cycle.claimed.iter().map(|c| (c.lease, c.task.attempt));
            let (mut done, mut failed, mut retried) = (vec![], vec![], vec![]);
            for (lease, attempt) in leases {
                let id = lease.task_id;
                if every(11, id) || (every(5, id) && attempt == 1) {
                    retried.push((lease, "flaky", retry_at));
                } else if every(7, id) {
                    failed.push((lease, "seventh"));
                } else {
                    done.push(lease);
                }
            }
            batch = finished(&done, &failed, &retried);
        }
    });
    let (mut finished_as, mut retried) = (HashMap::new(), vec![]);
    for (i, result) in results.into_iter().enumerate() {
        let (outcome, retries) = result.unwrap_or_else(|e| panic!("{kind}: runner {i}: {e:?}"));
        for (id, status) in outcome {
            let first = finished_as.insert(id, status).is_none();
            assert!(first, "{kind}: {id} finished twice");
        }
        retried.extend(retries);
    }
    assert_eq!(finished_as.len(), TASKS);
    let rows = f.store.list_for_workflow(wf).unwrap();
    let twice = |id| every(5, id) || every(11, id);
    let mut want_retried: Vec<Uuid> = rows.iter().map(|t| t.id).filter(|&id| twice(id)).collect();
    want_retried.sort();
    retried.sort();
    assert_eq!(retried, want_retried, "{kind}: each retried once");
    for row in rows {
        let (status, last) = match every(11, row.id) || every(7, row.id) {
            true => (Failed, EventType::Failed),
            false => (Completed, EventType::Completed),
        };
        assert_eq!(finished_as.get(&row.id), Some(&status));
        let attempts = 1 + i32::from(twice(row.id));
        let counts = (row.status, row.claim_count, row.attempt);
        assert_eq!(counts, (status, attempts, attempts));
        let mut want = vec![EventType::Created, EventType::Claimed];
        if twice(row.id) {
            want.extend([EventType::RetryScheduled, EventType::Claimed]);
        }
        want.push(last);
        let events: Vec<EventType> =
            checked_history(&f, &row).iter().map(|e| e.event_type).collect();
        assert_eq!(events, if f.keeps_history() { want } else { vec![] });
    }
}
