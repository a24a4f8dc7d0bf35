//! Many threads on one store: no lost update, no double transition.

use std::collections::BTreeSet;

use std::collections::HashMap;

use chrono::TimeDelta;
use dal_core::{Clock, DalError, Lease, NewTaskExecution, SubStatus, TaskStatus};
use uuid::Uuid;

use super::support::{Sequence, THREADS, on_threads, ready_tasks, task_in, workflow};
use crate::case;
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::Fixture;

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(concurrent_recovery_resets_lose_no_update),
    case!(concurrent_starts_of_one_task_let_exactly_one_through),
    case!(concurrent_creates_of_one_name_let_exactly_one_through),
    case!(concurrent_random_calls_keep_the_invariants),
];

const RESETS_PER_THREAD: usize = 50;

fn concurrent_recovery_resets_lose_no_update(kind: Backend) {
    let f = Fixture::new(kind);
    let task = task_in(f.store(), workflow(), "t", TaskStatus::Ready, 1);
    let id = task.id;
    let seen = on_threads(&f.store, move |_, store| {
        (0..RESETS_PER_THREAD)
            .map(|_| {
                store
                    .reset_task_for_recovery(id)
                    .expect("reset")
                    .recovery_attempts
            })
            .collect::<Vec<i32>>()
    });
    let total = (THREADS * RESETS_PER_THREAD) as i32;
    assert_eq!(f.store.get(id).unwrap().recovery_attempts, total);
    // Every call saw its own increment: the counts returned are exactly 1..=400.
    let returned: BTreeSet<i32> = seen.iter().flatten().copied().collect();
    assert_eq!(returned, (1..=total).collect::<BTreeSet<i32>>());
    // Each thread saw its own counts rise.
    assert!(
        seen.iter()
            .all(|counts| counts.windows(2).all(|w| w[0] < w[1]))
    );
}

fn concurrent_starts_of_one_task_let_exactly_one_through(kind: Backend) {
    let f = Fixture::new(kind);
    for round in 0..10 {
        let task = task_in(
            f.store(),
            workflow(),
            &format!("t{round}"),
            TaskStatus::Ready,
            1,
        );
        let id = task.id;
        let results = on_threads(&f.store, move |_, store| store.mark_running(id));
        let started = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(started, 1, "round {round}: {results:?}");
        for result in &results {
            if let Err(err) = result {
                assert!(
                    matches!(
                        err,
                        DalError::InvalidTransition {
                            from: TaskStatus::Running,
                            to: TaskStatus::Running,
                            ..
                        }
                    ),
                    "{err:?}"
                );
            }
        }
        let winner = results.into_iter().find_map(Result::ok).unwrap();
        assert_eq!(f.store.get(id).unwrap(), winner);
    }
}

fn concurrent_creates_of_one_name_let_exactly_one_through(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    let results = on_threads(&f.store, move |i, store| {
        store.create(&NewTaskExecution::new(wf, "only-once").with_max_attempts(1 + i as i32))
    });
    let created: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(created.len(), 1, "{results:?}");
    for result in &results {
        if let Err(err) = result {
            assert!(
                matches!(err, DalError::AlreadyExists { workflow_execution_id, task_name }
                    if *workflow_execution_id == wf && task_name == "only-once"),
                "{err:?}"
            );
        }
    }
    assert_eq!(
        f.store.list_for_workflow(wf).unwrap(),
        vec![created[0].clone()]
    );
}

/// Calls each thread of the random case makes.
const CALLS_PER_THREAD: usize = 350;

/// The least number of calls of each kind that changed something, over all threads: with 11
/// kinds and 8 threads of 250 calls the fewest was 6 (`heartbeat`, 8 runs on the four backends
/// of the suite, 2026-12-02); the threads make 350 calls each for a wider margin. With 12 kinds
/// (`fail_and_retry` added) and 350 calls the fewest was 14 (one run on the seven backends,
/// 2026-12-04).
const LEAST_CHANGED: usize = 5;

/// The kinds of call the random case makes.
const KINDS: [&str; 13] = [
    "claim_ready",
    "finish_and_claim",
    "complete",
    "fail",
    "fail_and_retry",
    "heartbeat",
    "release",
    "reset_task_for_recovery",
    "schedule_retry",
    "recover_stale_claims",
    "reset_retry_state",
    "claim_task",
    "set_sub_status",
];

/// What one thread saw succeed, per task, and its calls by kind.
#[derive(Debug, Default)]
struct Tally {
    /// Events the thread's successful calls wrote.
    events: HashMap<Uuid, usize>,
    /// Claims it made.
    claims: HashMap<Uuid, i32>,
    /// Recoveries it made (resets and sweeps).
    recoveries: HashMap<Uuid, i32>,
    /// Calls that changed something, by kind (a claim or a sweep that returned rows).
    changed: HashMap<&'static str, usize>,
    /// Calls made, by kind.
    calls: HashMap<&'static str, usize>,
}

impl Tally {
    fn add(map: &mut HashMap<Uuid, usize>, id: Uuid) {
        *map.entry(id).or_default() += 1;
    }

    /// Counts a call of `kind`: whether it changed something, or the error it returned, which
    /// must be one the race allows: a lease another call ended (`ClaimLost`), a task another
    /// call moved on (`InvalidTransition`), attempts used up (`RetriesExhausted`), or a
    /// guarded write whose task kept changing between the write and the read that explains it,
    /// on every try (a retryable conflict, nothing written). Any other error fails the case.
    fn call<T>(&mut self, kind: &'static str, result: Result<T, DalError>) -> Option<T> {
        *self.calls.entry(kind).or_default() += 1;
        match result {
            Ok(value) => Some(value),
            Err(
                DalError::ClaimLost { .. }
                | DalError::InvalidTransition { .. }
                | DalError::RetriesExhausted { .. }
                | DalError::AlreadyClaimed { .. }
                | DalError::NotDue { .. },
            ) => None,
            Err(err) if err.is_conflict() => None,
            Err(err) => panic!("{kind} failed with an error no race explains: {err:?}"),
        }
    }

    fn changed(&mut self, kind: &'static str) {
        *self.changed.entry(kind).or_default() += 1;
    }
}

fn concurrent_random_calls_keep_the_invariants(kind: Backend) {
    let f = Fixture::with(
        kind,
        crate::suite::Setup {
            pool_size: THREADS as u32,
            ..Default::default()
        },
    );
    let wf = workflow();
    let tasks: Vec<Uuid> = ready_tasks(f.store(), wf, 24, 3)
        .iter()
        .map(|t| t.id)
        .collect();
    let later = f.clock.now() + TimeDelta::hours(1);
    let start = f.clock.now();
    let shared_tasks = tasks.clone();
    let tallies = on_threads(&f.store, move |i, store| {
        let runner = Uuid::from_u128(0xC0 + i as u128);
        let mut seq = Sequence::new(i as u64 + 11);
        let mut leases: Vec<Lease> = Vec::new();
        let mut tally = Tally::default();
        let pick = |seq: &mut Sequence, n: usize| seq.next_in(0, n as u32 - 1) as usize;
        for _ in 0..CALLS_PER_THREAD {
            let task = shared_tasks[pick(&mut seq, shared_tasks.len())];
            let lease_at = (!leases.is_empty()).then(|| pick(&mut seq, leases.len()));
            let lease = lease_at.map(|at| leases[at]);
            let choice = seq.next_in(0, 13);
            // The lease calls need a lease; without one the thread claims instead.
            let choice = if lease.is_none() && ((2..=5).contains(&choice) || choice == 12) {
                0
            } else {
                choice
            };
            let leased =
                |call: &dyn Fn(&Lease) -> Result<dal_core::TaskExecution, DalError>| match &lease {
                    Some(lease) => call(lease),
                    None => unreachable!("a lease call without a lease"),
                };
            let (kind, changed) = match choice {
                0 | 1 => {
                    let limit = seq.next_in(1, 3);
                    let claimed = tally
                        .call("claim_ready", store.claim_ready(runner, limit))
                        .unwrap_or_default();
                    for claim in &claimed {
                        Tally::add(&mut tally.events, claim.task.id);
                        *tally.claims.entry(claim.task.id).or_default() += 1;
                        leases.push(claim.lease);
                    }
                    ("claim_ready", !claimed.is_empty())
                }
                2 => {
                    let done = tally.call("complete", leased(&|l| store.complete(l)));
                    if let Some(row) = &done {
                        Tally::add(&mut tally.events, row.id);
                    }
                    ("complete", done.is_some())
                }
                3 => {
                    let failed = tally.call("fail", leased(&|l| store.fail(l, "boom")));
                    if let Some(row) = &failed {
                        Tally::add(&mut tally.events, row.id);
                    }
                    ("fail", failed.is_some())
                }
                4 => {
                    let beat = tally.call("heartbeat", leased(&|l| store.heartbeat(l)));
                    ("heartbeat", beat.is_some())
                }
                5 => {
                    let released = tally.call("release", leased(&|l| store.release(l)));
                    if let Some(row) = &released {
                        Tally::add(&mut tally.events, row.id);
                    }
                    ("release", released.is_some())
                }
                6 => {
                    let reset = tally.call(
                        "reset_task_for_recovery",
                        store.reset_task_for_recovery(task),
                    );
                    if reset.is_some() {
                        Tally::add(&mut tally.events, task);
                        *tally.recoveries.entry(task).or_default() += 1;
                    }
                    ("reset_task_for_recovery", reset.is_some())
                }
                7 => {
                    let retried = tally.call("schedule_retry", store.schedule_retry(task, later));
                    if retried.is_some() {
                        Tally::add(&mut tally.events, task);
                    }
                    ("schedule_retry", retried.is_some())
                }
                8 => {
                    // Every claim is stale an hour from now.
                    let swept = tally
                        .call("recover_stale_claims", store.recover_stale_claims(later, 2))
                        .unwrap_or_default();
                    for row in &swept.reset {
                        Tally::add(&mut tally.events, row.id);
                        *tally.recoveries.entry(row.id).or_default() += 1;
                    }
                    for row in &swept.abandoned {
                        Tally::add(&mut tally.events, row.id);
                    }
                    (
                        "recover_stale_claims",
                        !(swept.reset.is_empty() && swept.abandoned.is_empty()),
                    )
                }
                10 => {
                    // A dispatcher's pick: the first due task, which others may claim first.
                    let task = store.list_ready(1).unwrap().first().map_or(task, |t| t.id);
                    let claimed = tally.call("claim_task", store.claim_task(task, runner));
                    if let Some(claim) = &claimed {
                        Tally::add(&mut tally.events, task);
                        *tally.claims.entry(task).or_default() += 1;
                        leases.push(claim.lease);
                    }
                    ("claim_task", claimed.is_some())
                }
                11 => {
                    // Mostly a task the thread holds (running, unless another call moved it on).
                    let task = lease.map_or(task, |l| l.task_id);
                    let sub = [None, Some(SubStatus::Active), Some(SubStatus::Deferred)]
                        [pick(&mut seq, 3)];
                    let set = tally.call("set_sub_status", store.set_sub_status(task, sub));
                    if let Some(row) = &set {
                        assert_eq!((row.status, row.sub_status), (TaskStatus::Running, sub));
                        Tally::add(&mut tally.events, task);
                    }
                    ("set_sub_status", set.is_some())
                }
                12 => {
                    let retried = tally.call(
                        "fail_and_retry",
                        leased(&|l| store.fail_and_retry(l, "boom", later)),
                    );
                    if let Some(row) = &retried {
                        Tally::add(&mut tally.events, row.id);
                    }
                    ("fail_and_retry", retried.is_some())
                }
                13 => {
                    // A runner cycle over the thread's leases, some stale by now, each task
                    // once: every one retried, due at once (so the tasks stay in play for the
                    // other kinds of call). Every lease comes back exactly once.
                    let mut batch: Vec<Lease> = Vec::new();
                    for l in &leases {
                        if !batch.iter().any(|b| b.task_id == l.task_id) {
                            batch.push(*l);
                        }
                    }
                    let finished = dal_core::Finished {
                        retried: batch
                            .iter()
                            .map(|&lease| dal_core::RetriedTask {
                                lease,
                                error: "boom".into(),
                                retry_at: start,
                            })
                            .collect(),
                        completed: Vec::new(),
                        failed: Vec::new(),
                    };
                    let done = tally.call(
                        "finish_and_claim",
                        store.finish_and_claim(runner, &finished, 1),
                    );
                    let answered = done.is_some();
                    let cycle = done.unwrap_or_default();
                    let mut back: Vec<Lease> = cycle
                        .completed
                        .iter()
                        .chain(&cycle.failed)
                        .chain(&cycle.retried)
                        .map(|row| {
                            Tally::add(&mut tally.events, row.id);
                            Lease {
                                task_id: row.id,
                                runner_id: runner,
                                claim: row.claim_count,
                            }
                        })
                        .chain(cycle.lost.iter().copied())
                        .collect();
                    if answered {
                        back.sort_by_key(|l| l.task_id);
                        batch.sort_by_key(|l| l.task_id);
                        assert_eq!(back, batch, "each lease comes back exactly once");
                    }
                    for claim in &cycle.claimed {
                        Tally::add(&mut tally.events, claim.task.id);
                        *tally.claims.entry(claim.task.id).or_default() += 1;
                    }
                    leases.retain(|l| !batch.contains(l));
                    leases.extend(cycle.claimed.iter().map(|c| c.lease));
                    (
                        "finish_and_claim",
                        back.len() > cycle.lost.len() || !cycle.claimed.is_empty(),
                    )
                }
                _ => {
                    let reset = tally.call("reset_retry_state", store.reset_retry_state(task));
                    if reset.is_some() {
                        Tally::add(&mut tally.events, task);
                    }
                    ("reset_retry_state", reset.is_some())
                }
            };
            if changed {
                tally.changed(kind);
            }
            // A runner forgets a lease it ended or found lost; it keeps one it heart-beat.
            let ended = ["complete", "fail", "fail_and_retry", "release"].contains(&kind)
                || (kind == "heartbeat" && !changed);
            if let Some(at) = lease_at.filter(|_| ended) {
                leases.swap_remove(at);
            }
        }
        tally
    });
    // Every kind of call was made, and changed something, more than a few times: a backend that
    // refused every write, or every call of one kind, fails here.
    for kind in KINDS {
        let calls: usize = tallies.iter().filter_map(|t| t.calls.get(kind)).sum();
        let changed: usize = tallies.iter().filter_map(|t| t.changed.get(kind)).sum();
        assert!(
            changed >= LEAST_CHANGED,
            "{kind}: {calls} calls, {changed} changed something"
        );
    }
    let calls: usize = tallies.iter().flat_map(|t| t.calls.values()).sum();
    for id in &tasks {
        let row = f.store.get(*id).unwrap();
        let sum = |get: &dyn Fn(&Tally) -> usize| tallies.iter().map(get).sum::<usize>();
        let changes = sum(&|t| t.events.get(id).copied().unwrap_or(0));
        // Every change left exactly one event (and the creation one); the history is a legal
        // path to the row, and no claim began while another was open. None with the history
        // off.
        let events = super::support::checked_history(&f, &row);
        if f.keeps_history() {
            assert_eq!(events.len(), 1 + changes, "task {id}: {events:#?}");
        }
        // No count was lost.
        assert_eq!(
            row.claim_count as usize,
            sum(&|t| t.claims.get(id).copied().unwrap_or(0) as usize)
        );
        assert_eq!(
            row.recovery_attempts as usize,
            sum(&|t| t.recoveries.get(id).copied().unwrap_or(0) as usize)
        );
        assert!((1..=row.max_attempts).contains(&row.attempt), "{row:?}");
    }
    if std::env::var_os("DAL_REPORT").is_some() {
        let by_kind: Vec<String> = KINDS
            .iter()
            .map(|k| {
                let calls: usize = tallies.iter().filter_map(|t| t.calls.get(k)).sum();
                let changed: usize = tallies.iter().filter_map(|t| t.changed.get(k)).sum();
                format!("{k} {changed}/{calls}")
            })
            .collect();
        eprintln!(
            "{kind}: {calls} concurrent calls on {} tasks keep the invariants (changed/calls: {})",
            tasks.len(),
            by_kind.join(", ")
        );
    }
}
