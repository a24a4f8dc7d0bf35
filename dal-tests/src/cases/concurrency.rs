//! Many threads on one store: no lost update, no double transition, the invariants kept.

use super::support::{
    Sequence, THREADS, checked_history, fails, on_threads, ready_tasks, task_in, workflow,
};
use crate::case;
use crate::model::Failure;
use crate::suite::{Backend, Case, Fixture};
use chrono::TimeDelta;
use dal_core::{
    Claimed, Clock, DalError, EventType, Finished, Lease, NewTaskExecution, RetriedTask, SubStatus,
    TaskExecution, TaskExecutionStore, TaskStatus::*,
};
use std::collections::BTreeSet;
use uuid::Uuid;

pub const CASES: &[Case] = &[
    case!(concurrent_writes_of_one_task_lose_no_update_and_let_one_through),
    case!(concurrent_random_calls_keep_the_invariants),
];

fn concurrent_writes_of_one_task_lose_no_update_and_let_one_through(kind: Backend) {
    const RESETS: usize = 50;
    let f = Fixture::new(kind);
    let ready = || task_in(f.store(), workflow(), "t", Ready, 1).id;
    // Recovery resets: every call sees its own increment (exactly 1..=400 in all, rising in
    // each thread), and the row counts them all.
    let id = ready();
    let seen = on_threads(f.store(), |_, store| {
        let reset = || store.reset_task_for_recovery(id).expect("reset");
        (0..RESETS).map(|_| reset().recovery_attempts).collect::<Vec<_>>()
    });
    let total = (THREADS * RESETS) as i32;
    assert_eq!(f.store.get(id).unwrap().recovery_attempts, total);
    let returned: BTreeSet<i32> = seen.iter().flatten().copied().collect();
    assert_eq!(returned, (1..=total).collect());
    assert!(seen.iter().all(|counts| counts.is_sorted()));
    // Starts of one task: exactly one goes through, the others find it running.
    for _ in 0..10 {
        let id = ready();
        let refused = |_: &TaskExecution| Failure::InvalidTransition(id, Running, Running);
        let started = exactly_one(&f, |_, s| s.mark_running(id), refused);
        assert_eq!(f.store.get(id).unwrap(), started);
    }
    // Runners racing to claim one task: exactly one gets it (under its own id), the others
    // hear which; one claim, one event.
    for _ in 0..20 {
        let id = ready();
        let claim = |_, s: &dyn TaskExecutionStore| {
            let runner = Uuid::now_v7();
            let claimed = s.claim_task(id, runner)?;
            assert_eq!(claimed.lease.runner_id, runner);
            Ok(claimed)
        };
        let won = exactly_one(&f, claim, |c| Failure::AlreadyClaimed(id, c.lease.runner_id));
        assert_eq!((f.store.get(id).unwrap(), won.task.claim_count), (won.task.clone(), 1));
        let events = checked_history(&f, &won.task);
        let claims = events.iter().filter(|e| e.event_type == EventType::Claimed);
        assert_eq!(claims.count(), usize::from(f.keeps_history()), "one claim, one event");
    }
    // Creates of one name: exactly one row, the others refused.
    let wf = workflow();
    let new = |i, s: &dyn TaskExecutionStore| {
        s.create(&NewTaskExecution::new(wf, "only-once").with_max_attempts(1 + i as i32))
    };
    let created = exactly_one(&f, new, |_| Failure::AlreadyExists(wf, "only-once".into()));
    assert_eq!(f.store.list_for_workflow(wf).unwrap(), [created]);
}

/// Runs `call` on every thread at once: exactly one goes through, the others fail with
/// `refused` of it.
fn exactly_one<T: Send + std::fmt::Debug>(
    f: &Fixture,
    call: impl Fn(usize, &dyn TaskExecutionStore) -> dal_core::Result<T> + Sync,
    refused: impl Fn(&T) -> Failure,
) -> T {
    let (won, lost): (Vec<_>, Vec<_>) =
        on_threads(f.store(), call).into_iter().partition(Result::is_ok);
    assert_eq!(won.len(), 1, "{}: {lost:?}", f.kind);
    let won = won.into_iter().next().unwrap().unwrap();
    for err in lost {
        assert_eq!(fails(err), refused(&won));
    }
    won
}

/// Calls each thread of the random case makes.
const CALLS_PER_THREAD: usize = 350;

/// The least number of calls of each kind that changed something.
const LEAST_CHANGED: usize = 5;

/// The calls the random case picks from, claims twice as often (a dispatcher's claim as often
/// as the others went through fewer than 5 times in one run in eight on async SQLite).
#[rustfmt::skip]
const CALLS: [&str; 15] = [
    "claim_ready", "claim_ready", "claim_task", "complete", "fail", "heartbeat", "release",
    "reset_task_for_recovery", "schedule_retry", "recover_stale_claims", "reset_retry_state",
    "claim_task", "set_sub_status", "fail_and_retry", "finish_and_claim",
];

/// The calls that need a lease (without one, the thread claims instead).
const LEASED: [&str; 5] = ["complete", "fail", "heartbeat", "release", "fail_and_retry"];

/// What a call that went through did: ("event" | "claim" | "recovery", task), the leases made.
type Done = (Vec<(&'static str, Uuid)>, Vec<Lease>);

fn row(row: TaskExecution) -> Done {
    (vec![("event", row.id)], vec![])
}

fn claims(claims: Vec<Claimed>) -> Done {
    let did = claims.iter().flat_map(|c| [("event", c.task.id), ("claim", c.task.id)]);
    (did.collect(), claims.iter().map(|c| c.lease).collect())
}

fn recovered(reset: Vec<TaskExecution>, abandoned: Vec<TaskExecution>) -> Done {
    let did = reset.iter().flat_map(|t| [("event", t.id), ("recovery", t.id)]);
    (did.chain(abandoned.iter().map(|t| ("event", t.id))).collect(), vec![])
}

/// A cycle retrying (due at once) the thread's leases, some stale, each task once: every lease
/// comes back exactly once.
fn cycle(
    store: &dyn TaskExecutionStore,
    runner: Uuid,
    leases: &mut Vec<Lease>,
    retry_at: chrono::DateTime<chrono::Utc>,
) -> dal_core::Result<Done> {
    // The first lease of each task (a stable sort keeps their order), in task id order.
    let mut batch = leases.clone();
    batch.sort_by_key(|l| l.task_id);
    batch.dedup_by_key(|l| l.task_id);
    leases.retain(|l| !batch.contains(l));
    let retried = batch.iter().map(|&lease| RetriedTask { lease, error: "boom".into(), retry_at });
    let finished = Finished { retried: retried.collect(), ..Finished::default() };
    let cycle = store.finish_and_claim(runner, &finished, 1)?;
    let rows = cycle.completed.iter().chain(&cycle.failed).chain(&cycle.retried);
    // A finished task's lease: its runner and claim number.
    let lease =
        |t: &TaskExecution| Lease { task_id: t.id, runner_id: runner, claim: t.claim_count };
    let mut back: Vec<Lease> = rows.clone().map(lease).collect();
    back.extend(&cycle.lost);
    back.sort_by_key(|l| l.task_id);
    assert_eq!(back, batch, "each lease comes back exactly once");
    let (mut did, leases) = claims(cycle.claimed);
    did.extend(rows.map(|row| ("event", row.id)));
    Ok((did, leases))
}

fn concurrent_random_calls_keep_the_invariants(kind: Backend) {
    let f = Fixture::new(kind);
    let tasks: Vec<Uuid> = ready_tasks(f.store(), workflow(), 24, 3).iter().map(|t| t.id).collect();
    let (start, later) = (f.clock.now(), f.clock.now() + TimeDelta::hours(1));
    // Each thread tells what its calls did, and (kind of call, whether it changed something).
    let per_thread = on_threads(f.store(), |i, store| {
        let runner = Uuid::from_u128(0xC0 + i as u128);
        let mut seq = Sequence::new(i as u64 + 11);
        let (mut leases, mut did, mut calls) = (Vec::<Lease>::new(), vec![], vec![]);
        let pick = |seq: &mut Sequence, n: usize| seq.next_in(0, n as u32 - 1) as usize;
        for _ in 0..CALLS_PER_THREAD {
            let task = tasks[pick(&mut seq, tasks.len())];
            let at = (!leases.is_empty()).then(|| pick(&mut seq, leases.len()));
            let lease = at.map(|at| leases[at]);
            let mut call = CALLS[pick(&mut seq, CALLS.len())];
            if lease.is_none() && LEASED.contains(&call) {
                call = "claim_ready";
            }
            let held = || lease.expect("a lease call has a lease");
            let result = match call {
                "claim_ready" => store.claim_ready(runner, seq.next_in(1, 3)).map(claims),
                "complete" => store.complete(&held()).map(row),
                "fail" => store.fail(&held(), "boom").map(row),
                "heartbeat" => store.heartbeat(&held()).map(|_| Done::default()),
                "release" => store.release(&held()).map(row),
                "reset_task_for_recovery" => {
                    let reset = store.reset_task_for_recovery(task);
                    reset.map(|row| recovered(vec![row], vec![]))
                }
                "schedule_retry" => store.schedule_retry(task, later).map(row),
                // Every claim is stale an hour from now.
                "recover_stale_claims" => {
                    let swept = store.recover_stale_claims(later, 2);
                    swept.map(|swept| recovered(swept.reset, swept.abandoned))
                }
                "reset_retry_state" => store.reset_retry_state(task).map(row),
                "claim_task" => {
                    // A dispatcher's pick: one of the due tasks, which others may claim first.
                    let due = store.list_ready(8).unwrap();
                    let task =
                        if due.is_empty() { task } else { due[pick(&mut seq, due.len())].id };
                    store.claim_task(task, runner).map(|c| claims(vec![c]))
                }
                "set_sub_status" => {
                    // Mostly a task the thread holds (running, unless another call moved it on).
                    let task = lease.map_or(task, |l| l.task_id);
                    let sub = [None, Some(SubStatus::Active), Some(SubStatus::Deferred)]
                        [pick(&mut seq, 3)];
                    store.set_sub_status(task, sub).map(|written| {
                        assert_eq!((written.status, written.sub_status), (Running, sub));
                        row(written)
                    })
                }
                "fail_and_retry" => store.fail_and_retry(&held(), "boom", later).map(row),
                _ => cycle(store, runner, &mut leases, start),
            };
            // The errors a race explains: a lease ended, a task moved on, attempts used up, a
            // claim or retry time in the way, or a task that kept changing under a guarded
            // write on every try (a retryable conflict, nothing written).
            let changed = match result {
                Ok((done, claims)) => {
                    let changed = !done.is_empty() || call == "heartbeat";
                    did.extend(done);
                    leases.extend(claims);
                    changed
                }
                Err(
                    DalError::ClaimLost { .. }
                    | DalError::InvalidTransition { .. }
                    | DalError::RetriesExhausted { .. }
                    | DalError::AlreadyClaimed { .. }
                    | DalError::NotDue { .. },
                ) => false,
                Err(err) if err.is_conflict() => false,
                Err(err) => panic!("{call} failed with an error no race explains: {err:?}"),
            };
            calls.push((call, changed));
            // A runner forgets a lease it ended or found lost; it keeps one it heart-beat.
            let ended = LEASED.contains(&call) && !(call == "heartbeat" && changed);
            if let Some(at) = at.filter(|_| ended) {
                leases.swap_remove(at);
            }
        }
        (did, calls)
    });
    let (did, calls): (Vec<Vec<_>>, Vec<Vec<_>>) = per_thread.into_iter().unzip();
    let (did, calls) = (did.concat(), calls.concat());
    let count = |what: &str, id: Uuid| did.iter().filter(|&&d| d == (what, id)).count();
    // Every kind of call changed something more than a few times.
    let mut by_kind = Vec::new();
    for call in CALLS.into_iter().collect::<BTreeSet<_>>() {
        let made = calls.iter().filter(|c| c.0 == call);
        let (made, changed) = (made.clone().count(), made.filter(|c| c.1).count());
        assert!(changed >= LEAST_CHANGED, "{call}: {made} calls, {changed} changed");
        by_kind.push(format!("{call} {changed}/{made}"));
    }
    for &id in &tasks {
        // One event per change (and the creation's), a legal history, no count lost.
        let row = f.store.get(id).unwrap();
        let events = checked_history(&f, &row);
        if f.keeps_history() {
            assert_eq!(events.len(), 1 + count("event", id), "{id}: {events:#?}");
        }
        let counts = (row.claim_count as usize, row.recovery_attempts as usize);
        assert_eq!(counts, (count("claim", id), count("recovery", id)));
        assert!((1..=row.max_attempts).contains(&row.attempt), "{row:?}");
    }
    if std::env::var_os("DAL_REPORT").is_some() {
        let (calls, by_kind) = (calls.len(), by_kind.join(", "));
        eprintln!("{kind}: {calls} concurrent calls on 24 tasks (changed/calls: {by_kind})");
    }
}
