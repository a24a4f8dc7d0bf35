//! Differential testing against the reference model: generated sequences of calls (the clock
//! moved between them) must give the same result on the model and the backend, call by call,
//! and end with the same rows and histories; a failing one shrinks to a minimal one (those found
//! are kept below). A second set leans towards finishing tasks and retention passes.
//! `DAL_MODEL_CASES` sets how many sequences of each set run (256 by default), `DAL_MODEL_SEED`
//! fixes them (every backend of a process runs the same ones).

use std::{fmt::Debug, ops::Range};

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::{
    Clock, ExecutionEvent, FailedTask, Finished, Lease, NewTaskExecution, RetriedTask, SubStatus,
    TaskExecutionStore, TaskStatus, Transition,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use uuid::Uuid;

use crate::case;
use crate::model::{Failure, Model, ModelEvent, Outcome};
use crate::suite::{Backend, Case, Fixture, start_time};

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

/// The workflow executions a sequence works on, the runners that claim, a task id no sequence
/// creates, and reasons and errors, valid and not (the last holds a NUL).
pub const WORKFLOWS: [Uuid; 3] =
    [Uuid::from_u128(0xA1), Uuid::from_u128(0xA2), Uuid::from_u128(0xA3)];
const RUNNERS: [Uuid; 3] = [Uuid::from_u128(0xB1), Uuid::from_u128(0xB2), Uuid::from_u128(0xB3)];
const UNKNOWN: Uuid = Uuid::from_u128(0xDEAD);
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

/// One call of a sequence, on the store method of its name but for these: `Transition(task,
/// kind, text, retry in secs)` is lease-less; `Claim(runner, limit)` is `claim_ready`;
/// `SubStatus(task, which)` sets `[None, Active, Deferred][which]`; `Leased(lease, kind, text)`
/// is `heartbeat`, `complete`, `fail`, `release` or `fail_and_retry`; `Cycle(runner, completed,
/// failed with a text, limit, retried with a text, twice)` is `finish_and_claim`; `Sweep(secs,
/// max)` is `recover_stale_claims(now - secs, max)`; `Read(kind, arg)` is a read;
/// `Prune(secs, limit, resume)` is `prune_finished(now - secs, limit, after)`, `after` the
/// cursor the sequence's last batch returned when `resume`. `Advance(secs)` moves the clock.
/// Tasks, leases and texts are picked by index (among those made so far); a retry by text index
/// `x` is due `20 x - 30` s from now. With `twice`, a `CompleteMany` or a `Cycle` also completes
/// another lease of the first one's task (stale or current), else the same lease again.
#[derive(Debug, Clone)]
pub enum Op {
    Advance(i64),
    Create(NewSpec),
    CreateMany(Vec<NewSpec>),
    Transition(usize, u8, usize, i64),
    Claim(usize, u32),
    ClaimTask(usize, usize),
    SubStatus(usize, u8),
    Leased(usize, u8, usize),
    CompleteMany(Vec<usize>, bool),
    Cycle(usize, Vec<usize>, Vec<(usize, usize)>, u32, Vec<(usize, usize)>, bool),
    Sweep(i64, i32),
    Read(u8, usize),
    Prune(i64, u32, bool),
}

fn new_spec() -> impl Strategy<Value = NewSpec> {
    let retry_in = proptest::option::weighted(0.2, -30..60i64);
    (0..3usize, 0..9u8, any::<bool>(), 1..4i32, retry_in)
        .prop_map(|(w, n, r, m, retry_in)| NewSpec { retry_in, ..spec(w, n, r, m) })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..90i64).prop_map(Op::Advance),
        3 => new_spec().prop_map(Op::Create),
        2 => vec(new_spec(), 0..5).prop_map(Op::CreateMany),
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
fn complete_many(sizes: Range<usize>) -> impl Strategy<Value = Op> {
    (vec(any::<usize>(), sizes), proptest::bool::weighted(0.3))
        .prop_map(|(picks, twice)| Op::CompleteMany(picks, twice))
}

/// A runner cycle: a runner, some leases to complete, some to fail and some to retry (often of
/// other runners or repeated, refused), a claim limit in `limits`.
fn cycle(limits: Range<u32>) -> impl Strategy<Value = Op> {
    let (done, texted) = (vec(any::<usize>(), 0..4), || vec((any::<usize>(), 0..5usize), 0..3));
    (0..3usize, done, texted(), limits, texted(), proptest::bool::weighted(0.3))
        .prop_map(|(r, d, f, l, rt, t)| Op::Cycle(r, d, f, l, rt, t))
}

/// A retention batch: a cut-off from 1 min after the current time to 90 s before it (now, the
/// time of the last writes, an edge, often), a small limit (now and then 0, refused), a new
/// pass or the sequence's pass resumed.
fn prune() -> impl Strategy<Value = Op> {
    let secs = prop_oneof![1 => Just(0i64), 4 => -60..90i64];
    (secs, prop_oneof![1 => Just(0u32), 8 => 1..4u32], any::<bool>())
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
    vec(
        prop_oneof![
            1 => new_spec().prop_map(Op::Create),
            1 => vec(new_spec(), 1..3).prop_map(Op::CreateMany),
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
    vec(op(), 1..40)
}

/// The seed of the generated sequences: `DAL_MODEL_SEED`, or one drawn once per test process
/// (the random bits of a UUIDv7). Every backend of a process runs the same sequences; a
/// failure names the seed that reproduces it.
pub fn seed() -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SEED.get_or_init(|| {
        let set = std::env::var("DAL_MODEL_SEED").ok().and_then(|n| n.parse().ok());
        set.unwrap_or_else(|| Uuid::now_v7().as_u64_pair().1)
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
    let (f, seed) = (Fixture::new(kind), seed());
    let (failure_persistence, rng_seed) = (None, RngSeed::Fixed(seed));
    let config = Config { failure_persistence, rng_seed, ..Config::with_cases(cases()) };
    let (ran, calls) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0usize));
    let result = TestRunner::new(config).run(&strategy, |ops| {
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
        let (ran, calls) = (ran.get(), calls.get());
        eprintln!(
            "{kind}: {ran} generated {what}sequences ({calls} calls, shrinking included) agree with the model (DAL_MODEL_SEED={seed})"
        );
    }
}

/// Sequences that once disagreed with the model (or came close), kept as regular cases; each
/// line of one a phase of it.
pub fn found_sequences() -> Vec<Vec<Op>> {
    use Op::*;
    let one = |wf, name| spec(wf, name, true, 1);
    // After `first`, task 0 started, failed, its retry due in 5 s.
    let attempt =
        |first| vec![first, Transition(0, 2, 0, 0), Transition(0, 4, 1, 0), Transition(0, 6, 0, 5)];
    vec![
        // A claim, the same task claimed again after a sweep, the old lease refused.
        [
            vec![Create(spec(0, 1, true, 2)), Claim(0, 1), Advance(60), Sweep(30, 2), Claim(0, 1)],
            vec![Leased(0, 1, 1), Leased(1, 1, 1)],
        ]
        .concat(),
        // A sweep whose threshold has nanoseconds, in the microsecond of a heartbeat: times are
        // cut to microseconds before they are compared (found by the generated sequences).
        vec![Create(one(0, 0)), Claim(0, 1), Sweep(0, 0)],
        // Several tasks changed by one statement (a batch create, a claim, a sweep): their
        // events are numbered in task-id order on both backends (found by the generated
        // sequences: PostgreSQL numbered them in the order its plan produced the rows).
        vec![
            CreateMany(vec![one(0, 2), one(0, 1), one(0, 0)]),
            Claim(0, 3),
            Advance(60),
            Sweep(30, 1),
        ],
        // A batch naming the same lease twice, and a lost one.
        [
            vec![CreateMany(vec![one(0, 1), one(0, 2)]), Claim(1, 2)],
            vec![Leased(0, 3, 0), CompleteMany(vec![0, 1, 1], false)],
        ]
        .concat(),
        // A cycle completing one lease twice, then a stale lease beside the current one of its
        // task, in a cycle and in a batch: each refused (a lease comes back exactly once or the
        // call writes nothing).
        [
            vec![Create(one(0, 1)), Claim(0, 1), Cycle(0, vec![0, 0], vec![], 0, vec![], false)],
            vec![Advance(60), Sweep(30, 2), Claim(0, 1)],
            vec![Cycle(0, vec![1, 0], vec![], 1, vec![], false)],
            vec![CompleteMany(vec![0], true), CompleteMany(vec![1], false)],
        ]
        .concat(),
        // Duplicates inside a batch, a clash with an existing task, and a blank name.
        vec![
            Create(spec(1, 3, false, 1)),
            CreateMany(vec![spec(1, 4, false, 1), spec(1, 3, true, 1)]),
            CreateMany(vec![spec(2, 5, false, 1), spec(2, 5, false, 1)]),
            Create(one(2, 8)),
        ],
        // Retries to exhaustion, then a manual re-run.
        [attempt(Create(spec(0, 0, true, 2))), attempt(Advance(10)), vec![Transition(0, 8, 0, 0)]]
            .concat(),
        // Retention in batches of one, the cursor carried: tasks finished in one microsecond
        // are paged by id; a workflow with an unfinished task is passed over; a removed
        // workflow's names are free again.
        [
            vec![CreateMany(vec![one(0, 0), one(1, 0), one(0, 1), one(2, 0)])],
            vec![Create(spec(2, 1, false, 1)), Claim(0, 4), CompleteMany(vec![0, 1, 2, 3], false)],
            vec![Advance(10), Prune(0, 1, false)],
            vec![Prune(0, 1, true); 4],
            vec![Create(one(0, 0)), Transition(4, 1, 1, 0), Prune(0, 2, false)],
            vec![Advance(1), Prune(0, 0, false), Prune(0, 3, false)],
        ]
        .concat(),
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

fn new_task(spec: &NewSpec, now: DateTime<Utc>) -> NewTaskExecution {
    // Name 8 is blank: rejected by validation.
    let name = if spec.name == 8 { " ".to_owned() } else { format!("t{}", spec.name) };
    let status = if spec.ready { TaskStatus::Ready } else { TaskStatus::NotStarted };
    let new = NewTaskExecution::new(WORKFLOWS[spec.wf], name).with_status(status);
    let retry_at = spec.retry_in.map(|s| now + TimeDelta::seconds(s));
    NewTaskExecution { retry_at, ..new.with_max_attempts(spec.max_attempts) }
}

/// How many kinds of transition the sequences generate (every variant of [`Transition`]), and
/// the transition of kind `kind`.
const TRANSITION_KINDS: u8 = 9;
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

/// Item `i` of `list`, round, if it has any.
fn pick<T: Copy>(list: &[T], i: usize) -> Option<T> {
    (!list.is_empty()).then(|| list[i % list.len()])
}

/// `picks` resolved among `leases`; with `twice`, also another lease of the first one's task
/// (stale or current), or the first one again when its task has no other.
fn lease_batch(leases: &[Lease], picks: &[usize], twice: bool) -> Vec<Lease> {
    let mut batch: Vec<Lease> = picks.iter().filter_map(|&i| pick(leases, i)).collect();
    if let (true, Some(&first)) = (twice, batch.first()) {
        let other = leases.iter().rev().find(|l| l.task_id == first.task_id && **l != first);
        batch.push(other.copied().unwrap_or(first));
    }
    batch
}

/// The text picked by `x`, and the retry time: from 30 s before `now` to 50 s after.
fn texted(x: usize, now: DateTime<Utc>) -> (String, DateTime<Utc>) {
    (TEXTS[x % TEXTS.len()].to_owned(), now + TimeDelta::seconds(20 * x as i64 - 30))
}

/// Compares the store's answer at step `at` with the model's.
fn agree<T: PartialEq + Debug>(
    (step, op): (usize, &Op),
    store: dal_core::Result<T>,
    model: Outcome<T>,
) -> Result<(), String> {
    let store = store.map_err(Failure::from);
    let differ = || format!("step {step}, {op:?}:\n  store: {store:?}\n  model: {model:?}");
    if store == model { Ok(()) } else { Err(differ()) }
}

/// Applies `ops` to the fixture's store and to a model, comparing every result and, at the end,
/// every row and every history.
pub fn run_sequence(f: &Fixture, ops: &[Op]) -> Result<(), String> {
    f.execute_sql(f.kind.empty_tables_sql());
    f.clock.set(start_time());
    let s: &dyn TaskExecutionStore = f.store();
    let model = Model::new(start_time());
    let mut model = if f.keeps_history() { model } else { model.without_history() };
    // The tasks and leases made so far, and where the sequence's retention pass stands.
    let (mut tasks, mut leases, mut cursor) = (Vec::new(), Vec::<Lease>::new(), None);
    for (step, op) in ops.iter().enumerate() {
        let (at, now) = ((step, op), f.clock.now());
        let task = |i: usize| pick(&tasks, i).unwrap_or(UNKNOWN);
        match op {
            Op::Advance(secs) => {
                f.clock.advance(TimeDelta::seconds(*secs) + TimeDelta::nanoseconds(1));
                model.set_now(f.clock.now());
            }
            Op::Create(spec) => {
                let new = new_task(spec, now);
                let stored = s.create(&new);
                let id = stored.as_ref().ok().map(|t| t.id);
                tasks.extend(id);
                agree(at, stored, model.create(&new, id))?;
            }
            Op::CreateMany(specs) => {
                let news: Vec<_> = specs.iter().map(|spec| new_task(spec, now)).collect();
                let stored = s.create_many(&news);
                let ids: Option<Vec<Uuid>> =
                    stored.as_ref().ok().map(|r| r.iter().map(|t| t.id).collect());
                let predicted = model.create_many(&news, ids.as_deref());
                tasks.extend(ids.unwrap_or_default());
                agree(at, stored, predicted)?;
            }
            Op::Transition(i, kind, x, retry_in) => {
                let (id, t) =
                    (task(*i), transition(*kind, *x, now + TimeDelta::seconds(*retry_in)));
                agree(at, s.transition(id, t.clone()), model.transition(id, &t))?;
            }
            Op::Claim(r, limit) => {
                let claims = s.claim_ready(RUNNERS[*r], *limit);
                leases.extend(claims.iter().flatten().map(|c| c.lease));
                agree(at, claims, Ok(model.claim_ready(RUNNERS[*r], *limit)))?;
            }
            Op::ClaimTask(i, r) => {
                let (id, runner) = (task(*i), RUNNERS[*r]);
                let claim = s.claim_task(id, runner);
                leases.extend(claim.iter().map(|c| c.lease));
                agree(at, claim, model.claim_task(id, runner))?;
            }
            Op::SubStatus(i, which) => {
                let subs = [None, Some(SubStatus::Active), Some(SubStatus::Deferred)];
                let (id, sub) = (task(*i), subs[usize::from(*which) % 3]);
                agree(at, s.set_sub_status(id, sub), model.set_sub_status(id, sub))?;
            }
            Op::Leased(l, kind, x) => {
                let Some(lease) = pick(&leases, *l) else { continue };
                let (l, (e, r)) = (&lease, texted(*x, now));
                match kind {
                    0 => agree(at, s.heartbeat(l), model.heartbeat(l)),
                    1 => agree(at, s.complete(l), model.complete(l)),
                    2 => agree(at, s.fail(l, &e), model.fail(l, &e)),
                    3 => agree(at, s.release(l), model.release(l)),
                    _ => agree(at, s.fail_and_retry(l, &e, r), model.fail_and_retry(l, &e, r)),
                }?;
            }
            Op::CompleteMany(picks, twice) => {
                let batch = lease_batch(&leases, picks, *twice);
                agree(at, s.complete_many(&batch), model.complete_many(&batch))?;
            }
            Op::Cycle(r, done, failed, limit, retried, twice) => {
                let lease = |i: usize| pick(&leases, i);
                let failed = failed.iter().filter_map(|&(i, x)| {
                    Some(FailedTask { lease: lease(i)?, error: texted(x, now).0 })
                });
                let retried = retried.iter().filter_map(|&(i, x)| {
                    let (error, retry_at) = texted(x, now);
                    Some(RetriedTask { lease: lease(i)?, error, retry_at })
                });
                let completed = lease_batch(&leases, done, *twice);
                let (failed, retried) = (failed.collect(), retried.collect());
                let finished = Finished { completed, failed, retried };
                let (runner, limit) = (RUNNERS[*r], *limit);
                let cycle = s.finish_and_claim(runner, &finished, limit);
                leases.extend(cycle.iter().flat_map(|c| &c.claimed).map(|c| c.lease));
                agree(at, cycle, model.finish_and_claim(runner, &finished, limit))?;
            }
            Op::Sweep(secs, max) => {
                let (t, m) = (now - TimeDelta::seconds(*secs), *max);
                agree(at, s.recover_stale_claims(t, m), model.recover_stale_claims(t, m))?;
            }
            Op::Read(kind, arg) => read(s, &model, at, *kind, *arg, &tasks, now)?,
            Op::Prune(secs, limit, resume) => {
                let (t, after) = (now - TimeDelta::seconds(*secs), cursor.filter(|_| *resume));
                let stored = s.prune_finished(t, *limit, after);
                cursor = stored.as_ref().map_or(cursor, |pruned| pruned.next);
                agree(at, stored, model.prune_finished(t, *limit, after))?;
            }
        }
    }
    // The end state: every row, every history, every workflow listing, the counts.
    let (end, now) = ((ops.len(), &Op::Read(0, 0)), f.clock.now());
    let events = |found: dal_core::Result<Vec<ExecutionEvent>>| {
        found.map(|events| events.iter().map(ModelEvent::of).collect::<Vec<_>>())
    };
    for (i, &id) in tasks.iter().enumerate() {
        read(s, &model, end, 0, i, &tasks, now)?;
        agree(end, events(s.events_for_task(id)), Ok(model.events_for_task(id)))?;
    }
    for (i, wf) in WORKFLOWS.into_iter().enumerate() {
        let ids: Vec<Uuid> = model.list_for_workflow(wf).iter().map(|t| t.id).collect();
        let predicted = model.events().iter().filter(|e| ids.contains(&e.task)).cloned().collect();
        agree(end, events(s.events_for_workflow(wf, None, 10_000)), Ok(predicted))?;
        read(s, &model, end, 1, i, &tasks, now)?;
    }
    read(s, &model, end, 12, 0, &tasks, now)
}

/// A read: which one by `kind`, its argument picked by `arg`.
fn read(
    s: &dyn TaskExecutionStore,
    model: &Model,
    at: (usize, &Op),
    kind: u8,
    arg: usize,
    tasks: &[Uuid],
    now: DateTime<Utc>,
) -> Result<(), String> {
    let wf = WORKFLOWS[arg % WORKFLOWS.len()];
    let some = [wf, WORKFLOWS[(arg + 1) % WORKFLOWS.len()], UNKNOWN];
    let (limit, older_than) = (arg as u32 % 5, now - TimeDelta::seconds(arg as i64 % 60));
    let id = pick(tasks, arg).unwrap_or(UNKNOWN);
    match kind {
        0 => agree(at, s.get(id), model.get(id)),
        1 => agree(at, s.list_for_workflow(wf), Ok(model.list_for_workflow(wf))),
        2 => agree(at, s.pending_tasks(&some), Ok(model.pending_tasks(&some))),
        3 => agree(at, s.statuses_for_workflows(&some), Ok(model.statuses_for_workflows(&some))),
        4 => agree(at, s.complete_workflows(&some), Ok(model.complete_workflows(&some))),
        5 => agree(at, s.has_abandoned_task(wf), Ok(model.has_abandoned_task(wf))),
        6 => agree(at, s.retry_stats(wf), Ok(model.retry_stats(wf))),
        7 => agree(at, s.exhausted_tasks(wf), Ok(model.exhausted_tasks(wf))),
        8 => agree(at, s.list_ready(limit), Ok(model.list_ready(limit, false))),
        9 => agree(at, s.list_due_retries(limit), Ok(model.list_ready(limit, true))),
        10 => agree(at, s.find_stale_claims(older_than), model.find_stale_claims(older_than)),
        11 => agree(at, s.deferred_tasks(&some), Ok(model.deferred_tasks(&some))),
        _ => agree(at, s.count_by_status(), Ok(model.count_by_status())),
    }
}

/// Every transition is generated: `kind_of` matches every variant, so a new one does not build
/// (in the tests) until it has a kind, which [`transition`] must then make.
#[cfg(test)]
mod kinds {
    use super::*;

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
        let kinds = (0..TRANSITION_KINDS).map(|k| kind_of(&transition(k, 0, Utc::now())));
        assert_eq!(kinds.collect::<Vec<u8>>(), (0..TRANSITION_KINDS).collect::<Vec<u8>>());
    }
}
