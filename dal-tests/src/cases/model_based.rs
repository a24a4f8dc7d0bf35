//! Differential testing against the reference model: generated sequences of calls (the clock
//! moved between them) must give the same result on the model and the backend, call by call,
//! and end with the same rows and histories; a failing one shrinks to a minimal one (those found
//! are kept below). A second set leans towards finishing tasks and retention passes.
//! `DAL_MODEL_CASES` sets how many sequences of each set run (256 by default), `DAL_MODEL_SEED`
//! fixes them (every backend of a process runs the same ones).

use std::fmt::Debug;

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::{
    Clock, FailedTask, Finished, Lease, NewTaskExecution, PruneCursor, RetriedTask, SubStatus,
    TaskExecutionStore, TaskStatus, Transition,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use uuid::Uuid;

use crate::case;
use crate::model::{Failure, Model, ModelEvent};
use crate::suite::Backend;
use crate::suite::Case;
use crate::suite::{Fixture, start_time};

/// The cases of this group.
pub const CASES: &[Case] = &[
    case!(generated_sequences_agree_with_the_model),
    case!(generated_retention_sequences_agree_with_the_model),
    case!(found_sequences_agree_with_the_model),
];

/// Sequences per backend: `DAL_MODEL_CASES`, 256 by default.
pub fn cases() -> u32 {
    std::env::var("DAL_MODEL_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
}

/// The workflow executions a sequence works on.
const WORKFLOWS: [Uuid; 3] = [Uuid::from_u128(0xA1), Uuid::from_u128(0xA2), Uuid::from_u128(0xA3)];
/// The runners that claim.
const RUNNERS: [Uuid; 3] = [Uuid::from_u128(0xB1), Uuid::from_u128(0xB2), Uuid::from_u128(0xB3)];
/// A task id no sequence creates.
const UNKNOWN: Uuid = Uuid::from_u128(0xDEAD);
/// Reasons and errors, valid and not (the last holds a NUL).
const TEXTS: [&str; 5] =
    ["", "boom", "x'); DROP TABLE task_executions;--", "🦀 ünï", "nul\0inside"];

/// A new task: in workflow `WORKFLOWS[wf]`, named `t{name}` (name 8 is blank, refused), `Ready`
/// or `NotStarted`, its retry due `retry_in` seconds from now.
#[derive(Debug, Clone)]
pub struct NewSpec {
    pub wf: usize,
    pub name: u8,
    pub ready: bool,
    pub max_attempts: i32,
    pub retry_in: Option<i64>,
}

/// `NewSpec` without a retry time.
pub fn spec(wf: usize, name: u8, ready: bool, max_attempts: i32) -> NewSpec {
    NewSpec { wf, name, ready, max_attempts, retry_in: None }
}

/// Runs `ops` on a fresh fixture of `kind` and on the model; panics where they disagree. For
/// cases whose every check the model makes (every field of every answer, row and event).
pub fn scenario(kind: Backend, ops: &[Op]) {
    if let Err(failure) = run_sequence(&Fixture::new(kind), ops) {
        panic!("{kind}: the store disagrees with the model: {failure}");
    }
}

/// One call of a sequence. Tasks and leases are picked by index among those made so far.
#[derive(Debug, Clone)]
pub enum Op {
    /// Move the clock forward by so many seconds.
    Advance(i64),
    /// `create`.
    Create(NewSpec),
    /// `create_many`.
    CreateMany(Vec<NewSpec>),
    /// A lease-less transition: which task, which transition, which text, retry offset.
    Transition(usize, u8, usize, i64),
    /// `claim_ready(runner, limit)`.
    Claim(usize, u32),
    /// `claim_task(task, runner)`.
    ClaimTask(usize, usize),
    /// `set_sub_status(task, [None, Active, Deferred][which])`.
    SubStatus(usize, u8),
    /// `heartbeat`, `complete`, `fail` (with a text), `release`, `fail_and_retry` (with a text,
    /// due from 30 s before now to 50 s after) of a lease.
    Leased(usize, u8, usize),
    /// `complete_many` of some leases; with `true`, also another lease of the first one's task
    /// (a stale or current claim of it) or, when it has none, the same lease again.
    CompleteMany(Vec<usize>, bool),
    /// `finish_and_claim(runner, completed leases, failed leases with a text, limit, retried
    /// leases with a text, due from 30 s before now to 50 s after)`; with `true`, the
    /// completed leases also name the first one's task again, as `CompleteMany`'s do.
    Cycle(usize, Vec<usize>, Vec<(usize, usize)>, u32, Vec<(usize, usize)>, bool),
    /// `recover_stale_claims(now - secs, max)`.
    Sweep(i64, i32),
    /// A read.
    Read(u8, usize),
    /// `prune_finished(now - secs, limit, after)`: `after` is the cursor the last batch of the
    /// sequence returned when `resume`, else none (a new pass).
    Prune(i64, u32, bool),
}

fn new_spec() -> impl Strategy<Value = NewSpec> {
    (0..3usize, 0..9u8, any::<bool>(), 1..4i32, proptest::option::weighted(0.2, -30..60i64))
        .prop_map(|(wf, name, ready, max_attempts, retry_in)| NewSpec {
            wf,
            name,
            ready,
            max_attempts,
            retry_in,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..90i64).prop_map(Op::Advance),
        3 => new_spec().prop_map(Op::Create),
        2 => proptest::collection::vec(new_spec(), 0..5).prop_map(Op::CreateMany),
        6 => (any::<usize>(), 0..TRANSITION_KINDS, 0..5usize, -30..60i64).prop_map(|(t, k, x, r)| Op::Transition(t, k, x, r)),
        4 => (0..3usize, 0..5u32).prop_map(|(r, l)| Op::Claim(r, l)),
        3 => (any::<usize>(), 0..3usize).prop_map(|(t, r)| Op::ClaimTask(t, r)),
        3 => (any::<usize>(), 0..3u8).prop_map(|(t, w)| Op::SubStatus(t, w)),
        5 => (any::<usize>(), 0..5u8, 0..5usize).prop_map(|(l, k, x)| Op::Leased(l, k, x)),
        1 => complete_many(0..4),
        2 => cycle(0..4u32),
        2 => (0..120i64, 0..3i32).prop_map(|(s, m)| Op::Sweep(s, m)),
        3 => (0..13u8, any::<usize>()).prop_map(|(k, x)| Op::Read(k, x)),
        2 => prune(),
    ]
}

/// A batch of `sizes` leases, now and then naming one task twice.
fn complete_many(sizes: std::ops::Range<usize>) -> impl Strategy<Value = Op> {
    (proptest::collection::vec(any::<usize>(), sizes), proptest::bool::weighted(0.3))
        .prop_map(|(picks, twice)| Op::CompleteMany(picks, twice))
}

/// A runner cycle: a runner, some leases to complete, some to fail and some to retry (often of
/// other runners or repeated, refused), a claim limit in `limits`.
fn cycle(limits: std::ops::Range<u32>) -> impl Strategy<Value = Op> {
    (
        0..3usize,
        proptest::collection::vec(any::<usize>(), 0..4),
        proptest::collection::vec((any::<usize>(), 0..5usize), 0..3),
        limits,
        proptest::collection::vec((any::<usize>(), 0..5usize), 0..3),
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(r, done, failed, limit, retried, twice)| {
            Op::Cycle(r, done, failed, limit, retried, twice)
        })
}

/// `picks` resolved among `leases`; with `twice`, also another lease of the first one's task
/// (stale or current), or the first one again when its task has no other.
fn lease_batch(leases: &[Lease], picks: &[usize], twice: bool) -> Vec<Lease> {
    if leases.is_empty() {
        return Vec::new();
    }
    let mut batch: Vec<Lease> = picks.iter().map(|i| leases[i % leases.len()]).collect();
    if let (true, Some(&first)) = (twice, batch.first()) {
        let other = leases.iter().rev().find(|l| l.task_id == first.task_id && **l != first);
        batch.push(other.copied().unwrap_or(first));
    }
    batch
}

/// A retention batch: a cut-off from 1 min after the current time to 90 s before it, a small
/// limit (now and then 0, refused), a new pass or the sequence's pass resumed.
fn prune() -> impl Strategy<Value = Op> {
    (
        // Now (the time of the last writes, an edge) often.
        prop_oneof![1 => Just(0i64), 4 => -60..90i64],
        prop_oneof![1 => Just(0u32), 8 => 1..4u32],
        any::<bool>(),
    )
        .prop_map(|(secs, limit, resume)| Op::Prune(secs, limit, resume))
}

/// Calls that finish tasks: claims, completions and failures under a lease, skips and
/// abandonments.
fn finishing() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..3usize, 1..5u32).prop_map(|(r, l)| Op::Claim(r, l)),
        1 => (any::<usize>(), 0..3usize).prop_map(|(t, r)| Op::ClaimTask(t, r)),
        3 => (any::<usize>(), 1..3u8, 0..4usize).prop_map(|(l, k, x)| Op::Leased(l, k, x)),
        1 => complete_many(1..4),
        1 => cycle(1..4u32),
        3 => (any::<usize>(), prop_oneof![Just(1u8), Just(5u8)], 0..4usize)
            .prop_map(|(t, k, x)| Op::Transition(t, k, x, 0)),
    ]
}

/// Sequences for retention: every call, with more that finish tasks and more batches, so that
/// workflow executions finish entirely and passes go over several batches.
pub fn retention_sequences() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            1 => new_spec().prop_map(Op::Create),
            1 => proptest::collection::vec(new_spec(), 1..3).prop_map(Op::CreateMany),
            3 => op(),
            6 => finishing(),
            1 => (0..90i64).prop_map(Op::Advance),
            3 => prune(),
        ],
        1..40,
    )
}

/// Sequences of up to 40 calls.
pub fn sequences() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..40)
}

/// The seed of the generated sequences: `DAL_MODEL_SEED`, or one drawn once per test process
/// (the random bits of a UUIDv7). Every backend of a process runs the same sequences; a
/// failure names the seed that reproduces it.
pub fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        std::env::var("DAL_MODEL_SEED")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| uuid::Uuid::now_v7().as_u64_pair().1)
    })
}

fn generated_sequences_agree_with_the_model(kind: Backend) {
    run_generated(kind, "", sequences());
}

fn generated_retention_sequences_agree_with_the_model(kind: Backend) {
    run_generated(kind, "retention ", retention_sequences());
}

/// Runs [`cases`] sequences of `strategy` against the model and the backend.
fn run_generated(kind: Backend, what: &str, strategy: impl Strategy<Value = Vec<Op>>) {
    let f = Fixture::new(kind);
    let seed = seed();
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        ..Config::default()
    });
    let (ran, calls) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0usize));
    let result = runner.run(&strategy, |ops| {
        ran.set(ran.get() + 1);
        calls.set(calls.get() + ops.len());
        run_sequence(&f, &ops).map_err(TestCaseError::fail)
    });
    if let Err(failure) = result {
        panic!(
            "{kind}: a {what}sequence disagrees with the model (DAL_MODEL_SEED={seed}): {failure}"
        );
    }
    if std::env::var_os("DAL_REPORT").is_some() {
        eprintln!(
            "{kind}: {} generated {what}sequences ({} calls, shrinking included) agree with the model (DAL_MODEL_SEED={seed})",
            ran.get(),
            calls.get()
        );
    }
}

/// Sequences that once disagreed with the model (or came close), kept as regular cases.
pub fn found_sequences() -> Vec<Vec<Op>> {
    vec![
        // A claim, the same task claimed again after a sweep, the old lease refused.
        vec![
            Op::Create(spec(0, 1, true, 2)),
            Op::Claim(0, 1),
            Op::Advance(60),
            Op::Sweep(30, 2),
            Op::Claim(0, 1),
            Op::Leased(0, 1, 1),
            Op::Leased(1, 1, 1),
        ],
        // A sweep whose threshold has nanoseconds, in the microsecond of a heartbeat: times are
        // cut to microseconds before they are compared (found by the generated sequences).
        vec![Op::Create(spec(0, 0, true, 1)), Op::Claim(0, 1), Op::Sweep(0, 0)],
        // Several tasks changed by one statement (a batch create, a claim, a sweep): their
        // events are numbered in task-id order on both backends (found by the generated
        // sequences: PostgreSQL numbered them in the order its plan produced the rows).
        vec![
            Op::CreateMany(vec![spec(0, 2, true, 1), spec(0, 1, true, 1), spec(0, 0, true, 1)]),
            Op::Claim(0, 3),
            Op::Advance(60),
            Op::Sweep(30, 1),
        ],
        // A batch naming the same lease twice, and a lost one.
        vec![
            Op::CreateMany(vec![spec(0, 1, true, 1), spec(0, 2, true, 1)]),
            Op::Claim(1, 2),
            Op::Leased(0, 3, 0),
            Op::CompleteMany(vec![0, 1, 1], false),
        ],
        // A cycle completing one lease twice, then a stale lease beside the current one of its
        // task, in a cycle and in a batch: each refused (a lease comes back exactly once or the
        // call writes nothing).
        vec![
            Op::Create(spec(0, 1, true, 1)),
            Op::Claim(0, 1),
            Op::Cycle(0, vec![0, 0], vec![], 0, vec![], false),
            Op::Advance(60),
            Op::Sweep(30, 2),
            Op::Claim(0, 1),
            Op::Cycle(0, vec![1, 0], vec![], 1, vec![], false),
            Op::CompleteMany(vec![0], true),
            Op::CompleteMany(vec![1], false),
        ],
        // Duplicates inside a batch, a clash with an existing task, and a blank name.
        vec![
            Op::Create(spec(1, 3, false, 1)),
            Op::CreateMany(vec![spec(1, 4, false, 1), spec(1, 3, true, 1)]),
            Op::CreateMany(vec![spec(2, 5, false, 1), spec(2, 5, false, 1)]),
            Op::Create(spec(2, 8, true, 1)),
        ],
        // Retries to exhaustion, then a manual re-run.
        vec![
            Op::Create(spec(0, 0, true, 2)),
            Op::Transition(0, 2, 0, 0),
            Op::Transition(0, 4, 1, 0),
            Op::Transition(0, 6, 0, 5),
            Op::Advance(10),
            Op::Transition(0, 2, 0, 0),
            Op::Transition(0, 4, 1, 0),
            Op::Transition(0, 6, 0, 5),
            Op::Transition(0, 8, 0, 0),
        ],
        // Retention in batches of one, the cursor carried: tasks finished in one microsecond
        // are paged by id; a workflow with an unfinished task is passed over; a removed
        // workflow's names are free again.
        vec![
            Op::CreateMany(vec![
                spec(0, 0, true, 1),
                spec(1, 0, true, 1),
                spec(0, 1, true, 1),
                spec(2, 0, true, 1),
            ]),
            Op::Create(spec(2, 1, false, 1)),
            Op::Claim(0, 4),
            Op::CompleteMany(vec![0, 1, 2, 3], false),
            Op::Advance(10),
            Op::Prune(0, 1, false),
            Op::Prune(0, 1, true),
            Op::Prune(0, 1, true),
            Op::Prune(0, 1, true),
            Op::Prune(0, 1, true),
            Op::Create(spec(0, 0, true, 1)),
            Op::Transition(4, 1, 1, 0),
            Op::Prune(0, 2, false),
            Op::Advance(1),
            Op::Prune(0, 0, false),
            Op::Prune(0, 3, false),
        ],
    ]
}

fn found_sequences_agree_with_the_model(kind: Backend) {
    let f = Fixture::new(kind);
    for (i, ops) in found_sequences().iter().enumerate() {
        if let Err(failure) = run_sequence(&f, ops) {
            panic!("{kind}: found sequence {i} disagrees with the model: {failure}");
        }
    }
}

/// Empties the fixture's tables and puts its clock back to the start.
fn reset(f: &Fixture) {
    f.execute_sql(f.kind.empty_tables_sql());
    f.clock.set(start_time());
}

fn name_of(name: u8) -> String {
    // Name 8 is blank: rejected by validation.
    if name == 8 { " ".to_owned() } else { format!("t{name}") }
}

fn new_task(spec: &NewSpec, now: DateTime<Utc>) -> NewTaskExecution {
    NewTaskExecution {
        retry_at: spec.retry_in.map(|s| now + TimeDelta::seconds(s)),
        ..NewTaskExecution::new(WORKFLOWS[spec.wf], name_of(spec.name))
            .with_status(if spec.ready { TaskStatus::Ready } else { TaskStatus::NotStarted })
            .with_max_attempts(spec.max_attempts)
    }
}

/// How many kinds of transition the sequences generate: every variant of [`Transition`].
const TRANSITION_KINDS: u8 = 9;

/// The transition of kind `kind` (below [`TRANSITION_KINDS`]).
fn transition(kind: u8, text: usize, retry_at: DateTime<Utc>) -> Transition {
    let text = TEXTS[text % TEXTS.len()].to_owned();
    match kind {
        0 => Transition::MarkReady,
        1 => Transition::MarkSkipped { reason: text },
        2 => Transition::MarkRunning,
        3 => Transition::MarkCompleted,
        4 => Transition::MarkFailed { error: text },
        5 => Transition::MarkAbandoned { reason: text },
        6 => Transition::ScheduleRetry { retry_at },
        7 => Transition::ResetForRecovery,
        _ => Transition::ResetRetryState,
    }
}

fn same<T: PartialEq + Debug>(step: usize, op: &Op, store: T, model: T) -> Result<(), String> {
    if store == model {
        Ok(())
    } else {
        Err(format!("step {step}, {op:?}:\n  store: {store:?}\n  model: {model:?}"))
    }
}

fn failure<T>(result: dal_core::Result<T>) -> Result<T, Failure> {
    result.map_err(Failure::from)
}

/// Applies `ops` to the fixture's store and to a model, comparing every result and, at the end,
/// every row and every history.
pub fn run_sequence(f: &Fixture, ops: &[Op]) -> Result<(), String> {
    reset(f);
    let s: &dyn TaskExecutionStore = f.store();
    let mut model = Model::new(start_time());
    if !f.keeps_history() {
        model = model.without_history();
    }
    let mut tasks: Vec<Uuid> = Vec::new();
    let mut leases: Vec<Lease> = Vec::new();
    // Where the sequence's retention pass stands.
    let mut cursor: Option<PruneCursor> = None;
    let pick = |list: &[Uuid], i: usize| {
        if list.is_empty() { UNKNOWN } else { list[i % list.len()] }
    };
    for (step, op) in ops.iter().enumerate() {
        let now = f.clock.now();
        match op {
            Op::Advance(secs) => {
                f.clock.advance(TimeDelta::seconds(*secs) + TimeDelta::nanoseconds(1));
                model.set_now(f.clock.now());
            }
            Op::Create(spec) => {
                let new = new_task(spec, now);
                let stored = failure(s.create(&new));
                let predicted = model.create(&new, stored.as_ref().ok().map(|t| t.id));
                if let Ok(t) = &stored {
                    tasks.push(t.id);
                }
                same(step, op, stored, predicted)?;
            }
            Op::CreateMany(specs) => {
                let news: Vec<NewTaskExecution> =
                    specs.iter().map(|spec| new_task(spec, now)).collect();
                let stored = failure(s.create_many(&news));
                let ids: Option<Vec<Uuid>> =
                    stored.as_ref().ok().map(|rows| rows.iter().map(|t| t.id).collect());
                let predicted = model.create_many(&news, ids.as_deref());
                tasks.extend(ids.unwrap_or_default());
                same(step, op, stored, predicted)?;
            }
            Op::Transition(task, kind, text, retry_in) => {
                let id = pick(&tasks, *task);
                let t = transition(*kind, *text, now + TimeDelta::seconds(*retry_in));
                same(step, op, failure(s.transition(id, t.clone())), model.transition(id, &t))?;
            }
            Op::Claim(runner, limit) => {
                let stored = failure(s.claim_ready(RUNNERS[*runner], *limit));
                let predicted = model.claim_ready(RUNNERS[*runner], *limit);
                if let Ok(claims) = &stored {
                    leases.extend(claims.iter().map(|c| c.lease));
                }
                same(step, op, stored, Ok(predicted))?;
            }
            Op::ClaimTask(task, runner) => {
                let id = pick(&tasks, *task);
                let stored = failure(s.claim_task(id, RUNNERS[*runner]));
                let predicted = model.claim_task(id, RUNNERS[*runner]);
                if let Ok(claim) = &stored {
                    leases.push(claim.lease);
                }
                same(step, op, stored, predicted)?;
            }
            Op::SubStatus(task, which) => {
                let id = pick(&tasks, *task);
                let sub = [None, Some(SubStatus::Active), Some(SubStatus::Deferred)]
                    [usize::from(*which) % 3];
                same(step, op, failure(s.set_sub_status(id, sub)), model.set_sub_status(id, sub))?;
            }
            Op::Leased(lease, kind, text_index) => {
                let Some(lease) = (!leases.is_empty()).then(|| leases[lease % leases.len()]) else {
                    continue;
                };
                let text = TEXTS[text_index % TEXTS.len()];
                let (stored, predicted) = match kind {
                    0 => (failure(s.heartbeat(&lease)), model.heartbeat(&lease)),
                    1 => (failure(s.complete(&lease)), model.complete(&lease)),
                    2 => (failure(s.fail(&lease, text)), model.fail(&lease, text)),
                    3 => (failure(s.release(&lease)), model.release(&lease)),
                    _ => {
                        let retry_at = now + TimeDelta::seconds(20 * *text_index as i64 - 30);
                        (
                            failure(s.fail_and_retry(&lease, text, retry_at)),
                            model.fail_and_retry(&lease, text, retry_at),
                        )
                    }
                };
                same(step, op, stored, predicted)?;
            }
            Op::CompleteMany(picks, twice) => {
                let batch = lease_batch(&leases, picks, *twice);
                same(step, op, failure(s.complete_many(&batch)), model.complete_many(&batch))?;
            }
            Op::Cycle(runner, done, failed, limit, retried, twice) => {
                let pick_lease = |i: &usize| leases[i % leases.len()];
                let finished = if leases.is_empty() {
                    Finished::default()
                } else {
                    Finished {
                        retried: retried
                            .iter()
                            .map(|(i, text)| RetriedTask {
                                lease: pick_lease(i),
                                error: TEXTS[text % TEXTS.len()].to_owned(),
                                retry_at: now + TimeDelta::seconds(20 * *text as i64 - 30),
                            })
                            .collect(),
                        completed: lease_batch(&leases, done, *twice),
                        failed: failed
                            .iter()
                            .map(|(i, text)| FailedTask {
                                lease: pick_lease(i),
                                error: TEXTS[text % TEXTS.len()].to_owned(),
                            })
                            .collect(),
                    }
                };
                let runner = RUNNERS[*runner];
                let stored = failure(s.finish_and_claim(runner, &finished, *limit));
                let predicted = model.finish_and_claim(runner, &finished, *limit);
                if let Ok(cycle) = &stored {
                    leases.extend(cycle.claimed.iter().map(|c| c.lease));
                }
                same(step, op, stored, predicted)?;
            }
            Op::Sweep(secs, max) => {
                let older_than = now - TimeDelta::seconds(*secs);
                same(
                    step,
                    op,
                    failure(s.recover_stale_claims(older_than, *max)),
                    model.recover_stale_claims(older_than, *max),
                )?;
            }
            Op::Read(kind, arg) => read(s, &model, (step, op), *kind, *arg, &tasks, now)?,
            Op::Prune(secs, limit, resume) => {
                let older_than = now - TimeDelta::seconds(*secs);
                let after = if *resume { cursor } else { None };
                let stored = failure(s.prune_finished(older_than, *limit, after));
                let predicted = model.prune_finished(older_than, *limit, after);
                if let Ok(pruned) = &stored {
                    cursor = pruned.next;
                }
                same(step, op, stored, predicted)?;
            }
        }
    }
    // The end state: every row, every history, every workflow listing, the counts.
    let end = (ops.len(), &Op::Read(0, 0));
    let now = f.clock.now();
    let events = |found: dal_core::Result<Vec<dal_core::ExecutionEvent>>| {
        found.map(|events| events.iter().map(ModelEvent::of).collect::<Vec<_>>())
    };
    for (i, id) in tasks.iter().enumerate() {
        read(s, &model, end, 0, i, &tasks, now)?;
        same(
            end.0,
            end.1,
            failure(events(s.events_for_task(*id))),
            Ok(model.events_for_task(*id)),
        )?;
    }
    let rows = model.tasks();
    for (i, wf) in WORKFLOWS.into_iter().enumerate() {
        let in_wf =
            |e: &&ModelEvent| rows.iter().any(|t| t.id == e.task && t.workflow_execution_id == wf);
        let predicted: Vec<ModelEvent> = model.events().iter().filter(in_wf).cloned().collect();
        same(
            end.0,
            end.1,
            failure(events(s.events_for_workflow(wf, None, 10_000))),
            Ok(predicted),
        )?;
        read(s, &model, end, 1, i, &tasks, now)?;
    }
    read(s, &model, end, 12, 0, &tasks, now)
}

/// A read: which one by `kind`, its argument picked by `arg`.
fn read(
    s: &dyn TaskExecutionStore,
    model: &Model,
    (step, op): (usize, &Op),
    kind: u8,
    arg: usize,
    tasks: &[Uuid],
    now: DateTime<Utc>,
) -> Result<(), String> {
    let wf = WORKFLOWS[arg % WORKFLOWS.len()];
    let some = [wf, WORKFLOWS[(arg + 1) % WORKFLOWS.len()], UNKNOWN];
    let (limit, older_than) = (arg as u32 % 5, now - TimeDelta::seconds(arg as i64 % 60));
    macro_rules! agree {
        ($store:expr, $model:expr) => {
            same(step, op, failure($store), Ok($model))
        };
    }
    match kind {
        0 => {
            let id = if tasks.is_empty() { UNKNOWN } else { tasks[arg % tasks.len()] };
            same(step, op, failure(s.get(id)), model.get(id))
        }
        1 => agree!(s.list_for_workflow(wf), model.list_for_workflow(wf)),
        2 => agree!(s.pending_tasks(&some), model.pending_tasks(&some)),
        3 => agree!(s.statuses_for_workflows(&some), model.statuses_for_workflows(&some)),
        4 => agree!(s.complete_workflows(&some), model.complete_workflows(&some)),
        5 => agree!(s.has_abandoned_task(wf), model.has_abandoned_task(wf)),
        6 => agree!(s.retry_stats(wf), model.retry_stats(wf)),
        7 => agree!(s.exhausted_tasks(wf), model.exhausted_tasks(wf)),
        8 => agree!(s.list_ready(limit), model.list_ready(limit, false)),
        9 => agree!(s.list_due_retries(limit), model.list_ready(limit, true)),
        10 => same(
            step,
            op,
            failure(s.find_stale_claims(older_than)),
            model.find_stale_claims(older_than),
        ),
        11 => agree!(s.deferred_tasks(&some), model.deferred_tasks(&some)),
        _ => agree!(s.count_by_status(), model.count_by_status()),
    }
}

/// Every transition is generated: `kind_of` matches every variant, so a new one does
/// not build (in the tests) until it has a kind that [`transition`] makes.
#[cfg(test)]
mod kinds {
    use super::*;

    /// The kind of `transition`: an exhaustive match, so a new variant does not build until it has
    /// a kind, and `every_transition_is_generated` then requires [`transition`] to make it.
    fn kind_of(transition: &Transition) -> u8 {
        match transition {
            Transition::MarkReady => 0,
            Transition::MarkSkipped { .. } => 1,
            Transition::MarkRunning => 2,
            Transition::MarkCompleted => 3,
            Transition::MarkFailed { .. } => 4,
            Transition::MarkAbandoned { .. } => 5,
            Transition::ScheduleRetry { .. } => 6,
            Transition::ResetForRecovery => 7,
            Transition::ResetRetryState => 8,
        }
    }

    #[test]
    fn every_transition_is_generated() {
        let at = Utc::now();
        let kinds: Vec<u8> =
            (0..TRANSITION_KINDS).map(|k| kind_of(&transition(k, 0, at))).collect();
        assert_eq!(kinds, (0..TRANSITION_KINDS).collect::<Vec<u8>>());
    }
}
