//! The runner protocol: claims, leases, heartbeats, fenced completion, the runner cycle, crash
//! recovery; where the model makes every check (answer, row, event), a case is a sequence.

use super::model_based::{NewSpec, Op, Op::*, scenario, spec};
use super::support::{assert_unchanged, checked_history, invalid, on_threads, ready_tasks};
use super::support::{stale_lease, under_lease, workflow};
use crate::case;
use crate::model::Failure;
use crate::suite::{Backend, Case, Fixture};
use chrono::{DateTime, TimeDelta, Utc};
use dal_core::TaskStatus::*;
use dal_core::{Claimed, DalError, EventType, FailedTask, Finished, Lease, Problem, RetriedTask};
use std::collections::{BTreeSet, HashMap};
use uuid::Uuid;

pub const CASES: &[Case] = &[
    case!(claims_and_listings_take_due_ready_tasks_oldest_first),
    case!(claim_task_claims_the_given_task_or_says_why_not),
    case!(calls_under_a_lease_need_the_current_claim),
    case!(fail_and_retry_queues_the_next_attempt_under_the_lease),
    case!(complete_many_completes_the_leases_that_still_hold),
    case!(a_sweep_resets_the_claims_still_stale_and_their_runners_lose_them),
    case!(a_dead_runners_task_is_reset_until_the_cap_then_abandoned),
    case!(bad_input_under_a_lease_is_refused_before_anything_is_sent),
    case!(a_cycle_finishes_retries_and_claims_as_one_change),
    case!(a_cycle_that_only_claims_or_only_finishes),
    case!(runners_cycling_together_finish_every_task_once),
];

type Time = DateTime<Utc>;

/// A `Ready` task (named `t{name}`, of the first workflow) due in `secs` seconds.
fn due(name: u8, secs: i64) -> NewSpec {
    NewSpec { retry_in: Some(secs), ..spec(0, name, true, 1) }
}

/// `n` `Ready` tasks of the first workflow with `max_attempts`, named `t0`, `t1`, ...
fn ready(n: u8, max_attempts: i32) -> Op {
    CreateMany((0..n).map(|i| spec(0, i, true, max_attempts)).collect())
}

/// Every call under lease `l`: each refused once the lease is lost.
fn each_call(l: usize) -> [Op; 5] {
    [0, 1, 2, 3, 4].map(|k| Leased(l, k, 1))
}

fn claims_and_listings_take_due_ready_tasks_oldest_first(kind: Backend) {
    // Due: t0, t2 (a retry due), t4, t5 (due now); t1 and t6 later; t3 and t7 not started.
    let tasks = [spec(0, 0, true, 1), due(1, 10), due(2, -10), spec(0, 3, false, 1)];
    let more = [spec(0, 4, true, 1), due(5, 0), due(6, 300), spec(0, 7, false, 1)];
    let create = CreateMany([tasks, more].concat());
    // Limits of 0 to 4 (reads and claims); once due, t1 queues behind the tasks due before it,
    // although its id is older; t3 made ready now queues behind every task already due.
    let mut ops = vec![create, Read(8, 4), Read(8, 2), Read(9, 4), Read(8, 1), Read(8, 0)];
    ops.extend([Claim(0, 0), Advance(1), Claim(0, 2), Advance(10), Read(9, 4)]);
    ops.extend([Transition(3, 0, 0, 0), Read(8, 4), Claim(1, 2), Claim(0, 4), Claim(2, 4)]);
    scenario(kind, &[ops, vec![Advance(300), Claim(0, 4)]].concat());
}

/// A dispatcher claims the task it picks; refused (nothing changed): claimed already (by anyone),
/// not due (until it is), in another status, unknown. The lease is any claim's.
fn claim_task_claims_the_given_task_or_says_why_not(kind: Backend) {
    let mut ops = vec![ClaimTask(0, 0), Create(spec(0, 0, true, 1)), Advance(1)];
    ops.extend([Create(spec(0, 1, true, 1)), Advance(1), ClaimTask(1, 0), ClaimTask(1, 0)]);
    ops.extend([
        ClaimTask(1, 1),
        Create(due(2, 300)),
        ClaimTask(2, 0),
        Create(spec(0, 3, false, 1)),
    ]);
    ops.extend([Create(spec(0, 4, true, 1)), Transition(4, 2, 0, 0), Create(spec(0, 5, false, 1))]);
    ops.extend([Transition(5, 1, 1, 0), Create(spec(0, 6, true, 1)), Transition(6, 2, 0, 0)]);
    ops.extend([Transition(6, 3, 0, 0), Create(spec(0, 7, true, 1)), Transition(7, 2, 0, 0)]);
    ops.extend([Transition(7, 4, 1, 0)].into_iter().chain((3..8).map(|t| ClaimTask(t, 0))));
    ops.extend([Advance(1), Leased(0, 0, 0), Claim(1, 4), Leased(0, 1, 0), Advance(300)]);
    scenario(kind, &[ops, vec![ClaimTask(2, 0)]].concat());
}

/// A heartbeat moves only `heartbeat_at`; completing, failing (a NUL refused) and releasing end
/// the claim: every call under it is lost, a new claim has a new number. A lease of another
/// runner or claim is lost for every call; an unknown task is not found.
fn calls_under_a_lease_need_the_current_claim(kind: Backend) {
    let mut ops = vec![ready(3, 2), Claim(0, 3), Advance(1), Leased(0, 0, 0), Advance(1)];
    ops.extend([Leased(0, 1, 0)].into_iter().chain(each_call(0)));
    ops.extend([Advance(1), Leased(1, 2, 2), Leased(1, 2, 4), Advance(1), Leased(2, 3, 0)]);
    ops.extend(each_call(2).into_iter().chain([Claim(0, 1)]).chain(each_call(2)));
    scenario(kind, &ops);
    let f = Fixture::new(kind);
    let s = f.store();
    ready_tasks(s, workflow(), 1, 2);
    let c = s.claim_ready(Uuid::now_v7(), 1).unwrap().remove(0);
    let (l, task_id, runner_id) = (c.lease, Uuid::now_v7(), Uuid::now_v7());
    for wrong in [Lease { runner_id, ..l }, Lease { claim: 2, ..l }, Lease { claim: 0, ..l }] {
        stale_lease(s, &wrong, &c.task);
    }
    let unknown = under_lease(s, &Lease { task_id, ..l });
    assert_eq!(unknown, [(); 5].map(|()| Failure::NotFound(task_id)));
    assert_unchanged(s, &c.task);
    checked_history(&f, &c.task);
}

/// The failure is kept and the next attempt queued at its time; the claim ends with it. Due,
/// the task is claimed again: its last attempt cannot be retried.
fn fail_and_retry_queues_the_next_attempt_under_the_lease(kind: Backend) {
    let mut ops = vec![ready(1, 2), Claim(0, 1), Advance(1), Leased(0, 4, 3), Claim(0, 1)];
    ops.extend(each_call(0));
    ops.extend([Advance(29), Claim(0, 1), Advance(1), Claim(0, 1), Leased(1, 4, 1)]);
    scenario(kind, &ops);
}

/// The leases that still hold are completed; a stale one (released, claimed again) and one
/// already completed are lost; an empty batch does nothing.
fn complete_many_completes_the_leases_that_still_hold(kind: Backend) {
    let mut ops = vec![ready(6, 1), Claim(0, 6), Leased(2, 3, 0), Claim(0, 1), Leased(3, 1, 0)];
    let batches = [CompleteMany(vec![0, 1, 2, 3, 4, 5], false), CompleteMany(vec![], false)];
    ops.push(Advance(1));
    scenario(kind, &[ops, batches.into()].concat());
}

/// Every claim looks stale (a running task without a claim is not judged), but the live runner
/// completes, fails, releases and reclaims, and heart-beats one first: only the still stale are
/// reset. The crashed runner, back, claims anew; its old leases are refused before and after.
fn a_sweep_resets_the_claims_still_stale_and_their_runners_lose_them(kind: Backend) {
    let mut ops = vec![ready(7, 1), Create(spec(0, 7, true, 1)), Transition(7, 2, 0, 0)];
    ops.extend([Claim(0, 3), Claim(1, 4), Advance(45), Read(10, 30), Leased(5, 3, 0)]);
    ops.extend([Leased(3, 1, 0), Leased(4, 2, 1), Claim(1, 1), Leased(6, 0, 0), Read(10, 30)]);
    ops.extend([Sweep(30, 5), Read(10, 30), Claim(0, 10)]);
    for (old, new) in [(0, 8), (1, 9), (2, 10)] {
        ops.extend(each_call(old).into_iter().chain([Leased(new, 1, 0)]).chain(each_call(old)));
    }
    scenario(kind, &ops);
}

/// A task handed to runners that die is reset each time (their leases lost) until the cap (3)
/// abandons it; with a cap of 0, at once.
fn a_dead_runners_task_is_reset_until_the_cap_then_abandoned(kind: Backend) {
    let mut ops = vec![ready(1, 1)];
    for round in 0..4 {
        ops.extend([ClaimTask(0, round % 3), Advance(60), Sweep(30, 3)]);
        ops.extend(each_call(round));
    }
    ops.extend([Claim(0, 1), Create(spec(1, 0, true, 1)), Claim(1, 1), Advance(60)]);
    ops.push(Sweep(30, 0));
    scenario(kind, &ops);
}

fn finished(done: &[Lease], failed: &[(Lease, &str)], retried: &[(Lease, &str, Time)]) -> Finished {
    let failed = failed.iter().map(|&(lease, e)| FailedTask { lease, error: e.into() });
    let retried = retried.iter().map(|&(lease, e, retry_at)| RetriedTask {
        lease,
        error: e.into(),
        retry_at,
    });
    Finished { completed: done.to_vec(), failed: failed.collect(), retried: retried.collect() }
}

/// Bad input under a lease (`fail_and_retry`, `complete_many`, a cycle) is refused naming the
/// field, nothing changed: a NUL, two runners, a task twice (one lease, or a stale one beside
/// the current), a negative cap; before anything is sent: too long, out of range, and those.
fn bad_input_under_a_lease_is_refused_before_anything_is_sent(kind: Backend) {
    let cycle = |done: &[usize], failed: &[usize], retried: &[usize], twice| {
        let text = |l: &usize| (*l, if *l >= 8 { 4 } else { 1 });
        let (failed, retried) = (failed.iter().map(text), retried.iter().map(text));
        Cycle(0, done.into(), failed.collect(), 5, retried.collect(), twice)
    };
    // Leases 0 to 2 of runner 0, 3 of runner 1; 8 and 9 (modulo 4: 0 and 1) with a NUL.
    let mut ops = vec![ready(4, 2), Claim(0, 3), Claim(1, 1), Leased(0, 4, 4)];
    ops.extend([CompleteMany(vec![0, 3], false), CompleteMany(vec![0, 0], false)]);
    ops.extend([CompleteMany(vec![0], true), cycle(&[1, 3], &[], &[], false)]);
    ops.extend([cycle(&[1], &[3], &[], false), cycle(&[1], &[8], &[], false)]);
    ops.extend([cycle(&[1, 0], &[2, 0], &[], false), cycle(&[], &[2, 2], &[], false)]);
    ops.extend([cycle(&[1, 0, 1], &[], &[], false), cycle(&[], &[], &[3], false)]);
    ops.extend([cycle(&[], &[], &[0, 9], false), cycle(&[], &[2], &[2], false)]);
    ops.extend([cycle(&[1], &[], &[1], false), Sweep(0, -1), Leased(1, 3, 0), Claim(0, 1)]);
    scenario(kind, &[ops, vec![CompleteMany(vec![4], true), cycle(&[4], &[], &[], true)]].concat());
    let f = Fixture::new(kind);
    let (s, wf, r) = (f.store(), workflow(), Uuid::now_v7());
    ready_tasks(s, wf, 2, 2);
    let h = s.claim_ready(r, 2).unwrap();
    let (h0, h1, other) =
        (h[0].lease, h[1].lease, Lease { runner_id: Uuid::now_v7(), ..h[0].lease });
    let (rows, events) = (s.list_for_workflow(wf).unwrap(), s.events_for_workflow(wf, None, 99));
    let (now, max) = (f.now(), dal_core::validate::MESSAGE_MAX_BYTES);
    let early = dal_core::validate::earliest_time() - TimeDelta::days(1);
    let too_long = Problem::TooLong { max, len: max + 1, unit: "bytes" };
    let (long, out) = ("x".repeat(max + 1), Problem::TimeOutOfRange);
    invalid(&f, "error", too_long, || s.fail_and_retry(&h0, &long, now));
    invalid(&f, "retry_at", out.clone(), || s.fail_and_retry(&h0, "e", early));
    invalid(&f, "error", Problem::ContainsNul, || s.fail_and_retry(&h0, "\0", now));
    let twice = Problem::FinishedTwice { first: "leases[0]".into() };
    invalid(&f, "leases[1].task_id", twice, || s.complete_many(&[h0, h0]));
    let not_same = Problem::NotTheSameRunner;
    invalid(&f, "leases[1].runner_id", not_same.clone(), || s.complete_many(&[h1, other]));
    for (batch, field, problem) in [
        (finished(&[], &[], &[(h0, "e", early)]), "retried[0].retry_at", out),
        (finished(&[h1, other], &[], &[]), "completed[1].runner_id", not_same),
        (
            finished(&[h1], &[(h1, "e")], &[]),
            "failed[0].lease.task_id",
            Problem::FinishedTwice { first: "finished.completed[0]".into() },
        ),
    ] {
        invalid(&f, &format!("finished.{field}"), problem, || s.finish_and_claim(r, &batch, 5));
    }
    assert_eq!(s.list_for_workflow(wf).unwrap(), rows);
    assert_eq!(s.events_for_workflow(wf, None, 99).unwrap(), events.unwrap());
}

/// One cycle: completions, failures, retries (the last attempt fails instead; a due one is
/// claimable next cycle), stale leases lost, a claim: one change, events in task id order, in
/// the backend's cycle statements plus one shape per failure.
fn a_cycle_finishes_retries_and_claims_as_one_change(kind: Backend) {
    // t0 to t7 with two attempts, t8 with one (claimed in id order); t3 and t7 released and
    // claimed again (leases 9, 10); a fresh task. Retries due: -30 s, -10 s, +30 s.
    let mut ops = vec![ready(8, 2), Advance(1), Create(spec(0, 8, true, 1)), Claim(0, 9)];
    ops.extend([Leased(3, 3, 0), Leased(7, 3, 0), ClaimTask(3, 0), ClaimTask(7, 0)]);
    ops.extend([Create(spec(1, 0, true, 1)), Advance(1)]);
    let retried = vec![(6, 3), (8, 1), (4, 0), (7, 1)];
    ops.extend([Cycle(0, vec![1, 0, 3], vec![(2, 1)], 5, retried, false), Advance(1), Claim(1, 5)]);
    scenario(kind, &ops);
    let f = Fixture::new(kind);
    let (s, r) = (f.store(), Uuid::now_v7());
    ready_tasks(s, workflow(), 8, 2);
    f.tick();
    ready_tasks(s, workflow(), 1, 1);
    let h: Vec<Lease> = s.claim_ready(r, 9).unwrap().iter().map(|c| c.lease).collect();
    assert_eq!(s.get(h[8].task_id).unwrap().max_attempts, 1);
    let stale = |i: usize| Lease { claim: 2, ..h[i] };
    ready_tasks(s, workflow(), 1, 1);
    let now = f.tick();
    let (soon, later) = (now - TimeDelta::minutes(1), now + TimeDelta::hours(1));
    let batch = finished(
        &[h[1], h[0], stale(3)],
        &[(h[2], "boom")],
        &[(h[6], "e3", later), (h[8], "out", soon), (h[4], "e2", soon), (stale(7), "no", soon)],
    );
    let (cycle, counts) = f.log.measure(|| s.finish_and_claim(r, &batch, 5).unwrap());
    // One failure, four retries, two (last attempt, stale lease) tried as failures too.
    let shape = kind.statement_counts();
    assert_eq!(counts.statements, shape.cycle + 7 * shape.cycle_per_failure);
    let sizes = [&cycle.completed, &cycle.failed, &cycle.retried].map(Vec::len);
    assert_eq!((sizes, cycle.lost, cycle.claimed.len()), ([2, 2, 2], vec![stale(3), stale(7)], 1));
}

/// Nothing to finish: a claim, as `claim_ready` makes it. Nothing to claim (limit 0): only the
/// finishing; a lease finished already is lost.
fn a_cycle_that_only_claims_or_only_finishes(kind: Backend) {
    let failing = vec![(0, 1), (1, 2)];
    let ops = [ready(3, 1), Advance(1), Cycle(0, vec![], vec![], 2, vec![], false)];
    let more = [Leased(1, 1, 0), Advance(1), Cycle(0, vec![], failing, 0, vec![], false)];
    scenario(kind, &[ops, more].concat());
}

/// Runners cycling on one queue finish every task once, one claim at a time: by id, every
/// fifth retried on its first attempt, every eleventh on each (its last fails), every seventh
/// not retried fails; the others complete.
fn runners_cycling_together_finish_every_task_once(kind: Backend) {
    let f = Fixture::new(kind);
    let wf = workflow();
    const TASKS: usize = 400;
    ready_tasks(f.store(), wf, TASKS, 2);
    let retry_at = f.now();
    let every = |n: u128, id: Uuid| id.as_u128().is_multiple_of(n);
    let results = on_threads(f.store(), |_, store| {
        let runner = Uuid::now_v7();
        let (mut batch, mut outcome, mut retries) = (Finished::default(), vec![], vec![]);
        loop {
            let cycle = store.finish_and_claim(runner, &batch, 8)?;
            assert!(cycle.lost.is_empty(), "{:?}", cycle.lost);
            outcome.extend(cycle.completed.iter().chain(&cycle.failed).map(|t| (t.id, t.status)));
            retries.extend(cycle.retried.iter().map(|t| t.id));
            // Done when nothing was sent nor claimed: a retry sent is claimable next.
            if cycle.claimed.is_empty() && batch.is_empty() {
                return Ok::<_, DalError>((outcome, retries));
            }
            batch = Finished::default();
            for Claimed { lease, task } in cycle.claimed {
                if every(11, task.id) || (every(5, task.id) && task.attempt == 1) {
                    batch.retried.push(RetriedTask { lease, error: "flaky".into(), retry_at });
                } else if every(7, task.id) {
                    batch.failed.push(FailedTask { lease, error: "seventh".into() });
                } else {
                    batch.completed.push(lease);
                }
            }
        }
    });
    let (mut finished_as, mut retried) = (HashMap::new(), vec![]);
    for (i, result) in results.into_iter().enumerate() {
        let (outcome, retries) = result.unwrap_or_else(|e| panic!("{kind}: runner {i}: {e:?}"));
        for (id, status) in outcome {
            assert!(finished_as.insert(id, status).is_none(), "{kind}: {id} finished twice");
        }
        retried.extend(retries);
    }
    assert_eq!(finished_as.len(), TASKS);
    let rows = f.store.list_for_workflow(wf).unwrap();
    let twice = |id| every(5, id) || every(11, id);
    let want_retried = rows.iter().map(|t| t.id).filter(|&id| twice(id)).collect::<BTreeSet<_>>();
    assert_eq!(retried.len(), want_retried.len(), "{kind}: each retried once");
    assert_eq!(retried.into_iter().collect::<BTreeSet<_>>(), want_retried, "{kind}");
    for row in rows {
        let (status, last) = match every(11, row.id) || every(7, row.id) {
            true => (Failed, EventType::Failed),
            false => (Completed, EventType::Completed),
        };
        assert_eq!(finished_as.get(&row.id), Some(&status));
        let attempts = 1 + i32::from(twice(row.id));
        assert_eq!((row.status, row.claim_count, row.attempt), (status, attempts, attempts));
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
