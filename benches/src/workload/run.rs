//! The run: a creator, runner threads, a sweeper, a pruner, and the wait for every task to
//! finish.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::{
    Claimed, DalError, FailedTask, Lease, NewTaskExecution, PruneCursor, RetriedTask,
    TaskExecution, TaskExecutionStore, TaskStatus,
};
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use super::args::{Args, RetryPath, RunnerCycle};
use super::ledger::{Finish, Ledger};
use super::metrics::{Collected, Latencies, Outcomes};
use super::plan::{Plan, Retry};
use super::record::Recorder;

/// What a finished run hands to the checks and the report.
pub struct Finished {
    /// The workflow executions created, and what happened to each.
    pub ledger: Arc<Ledger>,
    /// From the start of creation to the last task's end.
    pub elapsed: Duration,
    /// From the start of creation to the end of the last creation batch.
    pub creation: Duration,
    /// Latencies of every thread.
    pub latencies: Arc<Collected>,
    /// Counted outcomes.
    pub outcomes: Arc<Outcomes>,
    /// The first error that stopped a thread, if any.
    pub error: Option<String>,
}

struct Shared {
    store: Arc<dyn TaskExecutionStore>,
    args: Args,
    /// Every workflow execution and what happened to it; the run ends when each has finished
    /// (every task completed, failed on its last attempt, or abandoned) or was pruned.
    ledger: Arc<Ledger>,
    stop: AtomicBool,
    outcomes: Arc<Outcomes>,
    latencies: Arc<Collected>,
    /// Tasks being executed right now, by any runner.
    executing: Mutex<HashSet<Uuid>>,
    error: Mutex<Option<String>>,
}

impl Shared {
    fn fail_run(&self, what: &str, err: &DalError) {
        self.fail_with(format!("{what}: {err}"));
    }

    fn fail_with(&self, error: String) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert(error);
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Sleeps for `period`, waking early when the run stops; false when it stopped.
    fn pause(&self, period: Duration) -> bool {
        let until = Instant::now() + period;
        while !self.stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(Duration::from_millis(20)));
        }
        false
    }

    fn start_executing(&self, id: Uuid) {
        if !self
            .executing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
        {
            Outcomes::add(&self.outcomes.overlapping_executions);
        }
    }

    fn stop_executing(&self, id: Uuid) {
        self.executing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

/// A small deterministic generator (xorshift64*) for failures and crashes.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Self {
        Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Runs the workload `plan` describes on `store` and returns when every task has finished (or a
/// thread hit an error). After each creation batch, `recorder` (if any) records it. The store is
/// dropped before it returns, so its connections are closed.
pub fn run(
    store: Arc<dyn TaskExecutionStore>,
    args: &Args,
    plan: &Plan,
    recorder: Option<Recorder>,
) -> Finished {
    let total = args.tasks();
    let ledger = Arc::new(Ledger::of_plan(plan, args.tasks_per_workflow));
    let shared = Arc::new(Shared {
        store,
        args: args.clone(),
        ledger: Arc::clone(&ledger),
        stop: AtomicBool::new(false),
        outcomes: Arc::new(Outcomes::default()),
        latencies: Arc::new(Collected::default()),
        executing: Mutex::new(HashSet::new()),
        error: Mutex::new(None),
    });
    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} tasks finished, {per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );

    let start = Instant::now();
    retry(&shared, &plan.retries);
    let creator = {
        let shared = Arc::clone(&shared);
        let batches: Vec<(u64, Vec<Uuid>)> = plan
            .batches_to_create()
            .map(|(number, batch)| (number, batch.to_vec()))
            .collect();
        thread::spawn(move || create(&shared, &batches, recorder, start))
    };
    let mut threads = Vec::new();
    for index in 0..args.runners as usize {
        let shared = Arc::clone(&shared);
        threads.push(thread::spawn(move || runner(&shared, index)));
    }
    {
        let shared = Arc::clone(&shared);
        threads.push(thread::spawn(move || sweeper(&shared)));
    }
    if args.retention.enabled() {
        let shared = Arc::clone(&shared);
        threads.push(thread::spawn(move || pruner(&shared)));
    }
    while !ledger.all_settled() && !shared.stop.load(Ordering::Relaxed) {
        progress.set_position(ledger.finished_tasks());
        thread::sleep(Duration::from_millis(20));
    }
    let elapsed = start.elapsed();
    shared.stop.store(true, Ordering::Relaxed);
    let panicked = || {
        let mut slot = shared.error.lock().unwrap_or_else(PoisonError::into_inner);
        slot.get_or_insert_with(|| "a workload thread panicked".to_owned());
    };
    let creation = creator.join().unwrap_or_else(|_| {
        panicked();
        Duration::ZERO
    });
    for thread in threads {
        if thread.join().is_err() {
            panicked();
        }
    }
    progress.set_position(ledger.finished_tasks());
    progress.finish_and_clear();
    let error = shared
        .error
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    Finished {
        ledger,
        elapsed,
        creation,
        latencies: Arc::clone(&shared.latencies),
        outcomes: Arc::clone(&shared.outcomes),
        error,
    }
}

/// What a resumed run does first: retries the tasks whose runner died between `fail` and
/// `schedule_retry`, as an engine's scheduler would when it starts.
fn retry(shared: &Shared, retries: &[Retry]) {
    let mut latencies = Latencies::default();
    for retry in retries {
        match latencies.time("schedule_retry", || {
            shared.store.schedule_retry(retry.task, Utc::now())
        }) {
            Ok(_) => {
                Outcomes::add(&shared.outcomes.retries);
                shared.ledger.changed(retry.workflow);
            }
            Err(err) => shared.fail_run("schedule_retry", &err),
        }
    }
    shared.latencies.add(&latencies);
}

/// The scheduler's part: creates the workflows' tasks, `Ready`, a batch of workflows at a time,
/// and records each batch made. Returns how long after `start` it ended.
fn create(
    shared: &Shared,
    batches: &[(u64, Vec<Uuid>)],
    mut recorder: Option<Recorder>,
    start: Instant,
) -> Duration {
    let mut latencies = Latencies::default();
    let args = &shared.args;
    let pause = Duration::from_millis(args.create_pause_ms);
    for (i, (number, chunk)) in batches.iter().enumerate() {
        if shared.stop.load(Ordering::Relaxed) || (i > 0 && !shared.pause(pause)) {
            break;
        }
        let news: Vec<NewTaskExecution> = chunk
            .iter()
            .flat_map(|wf| {
                (0..args.tasks_per_workflow).map(move |i| {
                    NewTaskExecution::new(*wf, format!("task-{i}"))
                        .with_status(TaskStatus::Ready)
                        .with_max_attempts(args.max_attempts)
                })
            })
            .collect();
        match latencies.time("create_many", || shared.store.create_many(&news)) {
            Ok(created) => {
                for task in &created {
                    shared.ledger.changed(task.workflow_execution_id);
                }
            }
            Err(err) => {
                shared.fail_run("create_many", &err);
                break;
            }
        }
        if let Some(recorder) = &mut recorder
            && let Err(err) = latencies.time("record_batch", || recorder.created(number + 1))
        {
            shared.fail_with(format!("recording creation batch {number}: {err}"));
            break;
        }
    }
    shared.latencies.add(&latencies);
    start.elapsed()
}

/// One runner: claims a batch, executes it, fails (and retries) what fails and completes the
/// rest; a crashing runner now and then dies mid-batch, leaving its claims, and comes back
/// under a new id, trying to finish its old leases once they are surely stale.
///
/// With `--cycle one-statement` the batch's completions, its failures and its retries and the
/// claim of the next batch are one `finish_and_claim`; with `two-statements` each failure is a
/// `fail`, then one `complete_many`, then `claim_ready`. With `--retry fail-and-retry` (and
/// with `two-statements`) a failed task with attempts left is retried at once, one
/// `fail_and_retry`; with `fail-then-schedule` a `fail` and a `schedule_retry`.
fn runner(shared: &Shared, index: usize) {
    let args = &shared.args;
    let store = &*shared.store;
    let outcomes = &*shared.outcomes;
    let ledger = &*shared.ledger;
    let one_statement = args.cycle == RunnerCycle::OneStatement;
    let mut latencies = Latencies::default();
    let mut dice = Dice::new(args.seed.wrapping_add(index as u64 * 7919));
    let crashes = index < args.crashing_runners as usize;
    let stale_after = Duration::from_millis(args.stale_after_ms);
    let surely_stale = stale_after + 2 * Duration::from_millis(args.sweep_every_ms);
    let mut runner_id = Uuid::now_v7();
    // Leases left behind by a crash, and when.
    let mut left_behind: Option<(Vec<Lease>, Instant)> = None;
    // What the last batch finished, for the next `finish_and_claim`.
    let mut finished = dal_core::Finished::default();
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some((leases, _)) = left_behind.take_if(|(_, at)| at.elapsed() >= surely_stale) {
            match latencies.time("stale_complete_many", || store.complete_many(&leases)) {
                Ok(completion) => {
                    let accepted = completion.completed.len() as u64;
                    outcomes
                        .stale_accepted
                        .fetch_add(accepted, Ordering::Relaxed);
                    outcomes.completed.fetch_add(accepted, Ordering::Relaxed);
                    outcomes
                        .stale_refused
                        .fetch_add(completion.lost.len() as u64, Ordering::Relaxed);
                    for task in &completion.completed {
                        ledger.finished(task.workflow_execution_id, Finish::Completed);
                    }
                }
                Err(err) => shared.fail_run("complete_many with old leases", &err),
            }
        }
        let claimed = if one_statement {
            let cycle = latencies.time("finish_and_claim", || {
                store.finish_and_claim(runner_id, &finished, args.batch)
            });
            finished = dal_core::Finished::default();
            match cycle {
                Ok(cycle) => {
                    completed(shared, &cycle.completed, cycle.lost.len());
                    for task in &cycle.failed {
                        failed(shared, &mut latencies, task);
                    }
                    retried(shared, &cycle.retried);
                    cycle.claimed
                }
                Err(err) => {
                    shared.fail_run("finish_and_claim", &err);
                    break;
                }
            }
        } else {
            match latencies.time("claim_ready", || store.claim_ready(runner_id, args.batch)) {
                Ok(claimed) => claimed,
                Err(err) => {
                    shared.fail_run("claim_ready", &err);
                    break;
                }
            }
        };
        if claimed.is_empty() {
            Outcomes::add(&outcomes.empty_claims);
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        outcomes
            .claims
            .fetch_add(claimed.len() as u64, Ordering::Relaxed);
        for claim in &claimed {
            ledger.changed(claim.task.workflow_execution_id);
        }
        let crash_at = (crashes && dice.chance(args.crash_rate)).then(|| dice.below(claimed.len()));
        let held: Vec<Lease> = claimed.iter().map(|c| c.lease).collect();
        for claim in &claimed {
            shared.start_executing(claim.task.id);
        }
        let mut last_beat = Instant::now();
        let mut done: Vec<Lease> = Vec::with_capacity(claimed.len());
        let mut crashed = false;
        for (i, Claimed { task, lease }) in claimed.iter().enumerate() {
            if crash_at == Some(i) {
                // The process dies: what it executed is not finished, what it held stays
                // claimed until the sweeper sees the heartbeats stop.
                Outcomes::add(&outcomes.crashes);
                let mut orphans = done.clone();
                orphans.extend(finished.failed.drain(..).map(|f| f.lease));
                orphans.extend(finished.retried.drain(..).map(|r| r.lease));
                orphans.extend_from_slice(&held[i..]);
                left_behind = Some((orphans, Instant::now()));
                runner_id = Uuid::now_v7();
                crashed = true;
                break;
            }
            if last_beat.elapsed() > stale_after / 4 {
                for lease in done.iter().chain(&held[i..]) {
                    // A claim the sweeper recovered is lost; its task may even be finished by
                    // another runner and removed by retention since (not found).
                    match latencies.time("heartbeat", || store.heartbeat(lease)) {
                        Ok(_) | Err(DalError::ClaimLost { .. } | DalError::NotFound { .. }) => {}
                        Err(err) => shared.fail_run("heartbeat", &err),
                    }
                }
                last_beat = Instant::now();
            }
            if args.work_us > 0 {
                thread::sleep(Duration::from_micros(args.work_us));
            }
            if !dice.chance(args.fail_rate) {
                done.push(*lease);
                continue;
            }
            // A failed task with attempts left is retried: with the rest of the batch in the
            // next cycle (`in-cycle`, never `Failed`: Running until then), or at once, while
            // the rest of its batch is still running (`fail-and-retry`, never `Failed`
            // either; with `fail-then-schedule` it is `Failed` in between, and sent with the
            // cycle that moment could finish its workflow execution, which retention may
            // remove before the retry is scheduled). A last attempt's failure goes with the
            // next cycle.
            shared.stop_executing(task.id);
            let last_attempt = task.attempt >= task.max_attempts;
            if !last_attempt && one_statement && args.retry == RetryPath::InCycle {
                finished.retried.push(RetriedTask {
                    lease: *lease,
                    error: "simulated failure".into(),
                    retry_at: Utc::now(),
                });
                continue;
            }
            if !last_attempt && args.retry != RetryPath::FailThenSchedule {
                match latencies.time("fail_and_retry", || {
                    store.fail_and_retry(lease, "simulated failure", Utc::now())
                }) {
                    Ok(retried) => {
                        Outcomes::add(&outcomes.failures);
                        Outcomes::add(&outcomes.retries);
                        ledger.changed(retried.workflow_execution_id);
                    }
                    Err(DalError::ClaimLost { .. } | DalError::NotFound { .. }) => {
                        Outcomes::add(&outcomes.claims_lost);
                    }
                    Err(err) => shared.fail_run("fail_and_retry", &err),
                }
                continue;
            }
            if one_statement && last_attempt {
                finished.failed.push(FailedTask {
                    lease: *lease,
                    error: "simulated failure".into(),
                });
                continue;
            }
            match latencies.time("fail", || store.fail(lease, "simulated failure")) {
                Ok(task) => failed(shared, &mut latencies, &task),
                Err(DalError::ClaimLost { .. } | DalError::NotFound { .. }) => {
                    Outcomes::add(&outcomes.claims_lost);
                }
                Err(err) => shared.fail_run("fail", &err),
            }
        }
        for claim in &claimed {
            shared.stop_executing(claim.task.id);
        }
        if crashed || done.is_empty() {
            continue;
        }
        if one_statement {
            finished.completed = done;
            continue;
        }
        match latencies.time("complete_many", || store.complete_many(&done)) {
            Ok(completion) => completed(shared, &completion.completed, completion.lost.len()),
            Err(err) => shared.fail_run("complete_many", &err),
        }
    }
    // What the last batch finished, when the run stops before the next cycle.
    if !finished.is_empty() {
        match latencies.time("finish_and_claim", || {
            store.finish_and_claim(runner_id, &finished, 0)
        }) {
            Ok(cycle) => {
                completed(shared, &cycle.completed, cycle.lost.len());
                for task in &cycle.failed {
                    failed(shared, &mut latencies, task);
                }
                retried(shared, &cycle.retried);
            }
            Err(err) => shared.fail_run("finish_and_claim", &err),
        }
    }
    shared.latencies.add(&latencies);
}

/// Counts tasks a runner completed, and leases it found lost.
fn completed(shared: &Shared, tasks: &[TaskExecution], lost: usize) {
    let outcomes = &*shared.outcomes;
    outcomes
        .completed
        .fetch_add(tasks.len() as u64, Ordering::Relaxed);
    outcomes
        .claims_lost
        .fetch_add(lost as u64, Ordering::Relaxed);
    for task in tasks {
        shared
            .ledger
            .finished(task.workflow_execution_id, Finish::Completed);
    }
}

/// Counts the tasks a runner cycle retried (each a failure and a retry).
fn retried(shared: &Shared, tasks: &[TaskExecution]) {
    let (outcomes, ledger) = (&*shared.outcomes, &*shared.ledger);
    for task in tasks {
        Outcomes::add(&outcomes.failures);
        Outcomes::add(&outcomes.retries);
        ledger.changed(task.workflow_execution_id);
    }
}

/// A task a runner failed: retried while it has attempts left, otherwise exhausted.
fn failed(shared: &Shared, latencies: &mut Latencies, task: &TaskExecution) {
    let (outcomes, ledger) = (&*shared.outcomes, &*shared.ledger);
    Outcomes::add(&outcomes.failures);
    if task.attempt < task.max_attempts {
        ledger.changed(task.workflow_execution_id);
        match latencies.time("schedule_retry", || {
            shared.store.schedule_retry(task.id, Utc::now())
        }) {
            Ok(retried) => {
                Outcomes::add(&outcomes.retries);
                ledger.changed(retried.workflow_execution_id);
            }
            Err(err) => shared.fail_run("schedule_retry", &err),
        }
    } else {
        Outcomes::add(&outcomes.exhausted);
        ledger.finished(task.workflow_execution_id, Finish::Exhausted);
    }
}

/// The sweeper: recovers the claims of runners that stopped heart-beating.
fn sweeper(shared: &Shared) {
    let args = &shared.args;
    let mut latencies = Latencies::default();
    let stale_after = TimeDelta::milliseconds(args.stale_after_ms as i64);
    while shared.pause(Duration::from_millis(args.sweep_every_ms)) {
        let swept = latencies.time("recover_stale_claims", || {
            shared
                .store
                .recover_stale_claims(Utc::now() - stale_after, args.max_recoveries)
        });
        match swept {
            Ok(recovery) => {
                shared
                    .outcomes
                    .recovered
                    .fetch_add(recovery.reset.len() as u64, Ordering::Relaxed);
                shared
                    .outcomes
                    .abandoned
                    .fetch_add(recovery.abandoned.len() as u64, Ordering::Relaxed);
                for task in &recovery.reset {
                    shared.ledger.changed(task.workflow_execution_id);
                }
                for task in &recovery.abandoned {
                    shared
                        .ledger
                        .finished(task.workflow_execution_id, Finish::Abandoned);
                }
            }
            Err(err) => shared.fail_run("recover_stale_claims", &err),
        }
    }
    shared.latencies.add(&latencies);
}

/// How often the pruner makes a full retention pass instead of an incremental one.
const FULL_PASS_EVERY: Duration = Duration::from_secs(30);

/// How far before the start of the last complete pass an incremental pass starts.
const PASS_MARGIN: TimeDelta = TimeDelta::seconds(2);

/// The pruner: every `--prune-every-ms`, a whole retention pass, `prune_finished` batch after
/// batch until the cursor runs out, each batch timed and recorded in the ledger.
fn pruner(shared: &Shared) {
    let retention = &shared.args.retention;
    let outcomes = &*shared.outcomes;
    let mut latencies = Latencies::default();
    let retain = TimeDelta::milliseconds(i64::try_from(retention.retain_ms).unwrap_or(i64::MAX));
    // Incremental passes (see `RetentionStore::prune_finished`): each starts with the tasks that
    // finished since the last complete pass began, less a margin; a full pass now and then.
    let mut since: Option<DateTime<Utc>> = None;
    let mut full_pass_at = Instant::now();
    'passes: while shared.pause(Duration::from_millis(retention.prune_every_ms)) {
        let now = Utc::now();
        let older_than = now.checked_sub_signed(retain).unwrap_or(now);
        if full_pass_at.elapsed() >= FULL_PASS_EVERY {
            since = None;
        }
        if since.is_none() {
            full_pass_at = Instant::now();
        }
        let mut after: Option<PruneCursor> = since.map(PruneCursor::finished_since);
        loop {
            let batch = latencies.time("prune_finished", || {
                shared
                    .store
                    .prune_finished(older_than, retention.prune_batch, after)
            });
            let pruned = match batch {
                Ok(pruned) => pruned,
                Err(err) => {
                    shared.fail_run("prune_finished", &err);
                    break 'passes;
                }
            };
            Outcomes::add(&outcomes.prune_batches);
            outcomes
                .pruned_workflows
                .fetch_add(pruned.workflows.len() as u64, Ordering::Relaxed);
            outcomes
                .pruned_tasks
                .fetch_add(pruned.tasks, Ordering::Relaxed);
            outcomes
                .pruned_events
                .fetch_add(pruned.events, Ordering::Relaxed);
            shared.ledger.pruned(&pruned);
            after = pruned.next;
            if after.is_none() {
                Outcomes::add(&outcomes.prune_passes);
                since = older_than.min(now).checked_sub_signed(PASS_MARGIN);
                break;
            }
            if shared.stop.load(Ordering::Relaxed) {
                break 'passes;
            }
        }
    }
    shared.latencies.add(&latencies);
}
