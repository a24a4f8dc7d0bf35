//! The run: a creator, runner threads, a sweeper and a pruner on one store, until every task
//! has finished or was removed by retention.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::{Claimed, DalError, FailedTask, Finished, NewTaskExecution, PruneCursor};
use dal_core::{RetriedTask, TaskExecution, TaskExecutionStore, TaskStatus};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use uuid::Uuid;

use super::args::Job;
use super::db::Recorder;
use super::ledger::{Ledger, workflow_id};
use super::report::{Metrics, Op, Outcome};

/// What a run measured: every thread's latencies and outcomes, the time from the first creation
/// to the last task's end (`elapsed`) and to the end of the last creation batch (`creation`).
#[allow(missing_docs)]
pub struct Ran {
    pub metrics: Metrics,
    pub elapsed: Duration,
    pub creation: Duration,
}

/// What the run's threads share.
struct Shared<'a> {
    store: &'a dyn TaskExecutionStore,
    job: &'a Job,
    ledger: &'a Ledger,
    stop: AtomicBool,
    error: Mutex<Option<String>>,
    creation: OnceLock<Duration>,
}

/// Runs `job` on `store` until every task of `ledger` has finished or was removed; the first
/// error that stops it instead, if one does. After each creation batch `recorder`, if any,
/// records it.
pub fn run(
    store: &dyn TaskExecutionStore,
    job: &Job,
    ledger: &Ledger,
    recorder: Option<Recorder>,
    quiet: bool,
) -> Result<Ran, String> {
    let (stop, error, creation) = (AtomicBool::new(false), Mutex::new(None), OnceLock::new());
    let shared = Shared { store, job, ledger, stop, error, creation };
    let progress = ProgressBar::new(job.tasks());
    let template = "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} tasks finished, {per_sec}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        progress.set_style(style.progress_chars("=> "));
    }
    if quiet {
        progress.set_draw_target(ProgressDrawTarget::hidden());
    }
    let (s, start, mut metrics) = (&shared, Instant::now(), Metrics::default());
    let elapsed = thread::scope(|scope| {
        let mut threads = vec![scope.spawn(|| create(s, recorder, start))];
        threads.push(scope.spawn(|| sweeper(s)));
        threads.extend((0..job.runners).map(|index| scope.spawn(move || runner(s, index))));
        if job.prune_every_ms > 0 {
            threads.push(scope.spawn(|| pruner(s)));
        }
        while !ledger.all_settled() && !s.stopped() {
            progress.set_position(ledger.finished_tasks());
            thread::sleep(Duration::from_millis(20));
        }
        let elapsed = start.elapsed();
        s.stop.store(true, Relaxed);
        for thread in threads {
            match thread.join() {
                Ok(done) => metrics.merge(&done),
                Err(_) => s.fail("a workload thread", "panicked"),
            }
        }
        elapsed
    });
    progress.finish_and_clear();
    let creation = shared.creation.get().copied().unwrap_or_default();
    let error = shared.error.into_inner();
    let error = error.unwrap_or_else(PoisonError::into_inner);
    let ran = Ran { metrics, elapsed, creation };
    error.map_or(Ok(ran), Err)
}

impl Shared<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    fn fail(&self, what: &str, err: impl std::fmt::Display) {
        let mut error = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        error.get_or_insert_with(|| format!("{what}: {err}"));
        self.stop.store(true, Relaxed);
    }

    /// Sleeps for `ms` milliseconds, waking early when the run stops; false when it stopped.
    fn pause(&self, ms: u64) -> bool {
        let until = Instant::now() + Duration::from_millis(ms);
        while !self.stopped() && Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            thread::sleep(left.min(Duration::from_millis(20)));
        }
        !self.stopped()
    }

    /// Counts tasks a call changed, each with its event; as finished `how` (completed,
    /// exhausted or abandoned), if they did.
    fn changed(&self, metrics: &mut Metrics, tasks: &[TaskExecution], how: Option<Outcome>) {
        self.ledger.record(tasks.iter().map(|t| t.workflow_execution_id), how.map(|h| h as usize));
        how.into_iter().for_each(|how| metrics.count(how, tasks.len()));
    }
}

/// The scheduler: creates the tasks, `Ready`, a batch of workflow executions at a time, and
/// records each batch made.
fn create(s: &Shared, mut recorder: Option<Recorder>, start: Instant) -> Metrics {
    let (job, mut metrics) = (s.job, Metrics::default());
    for (i, (number, batch)) in s.ledger.batches_to_create().into_iter().enumerate() {
        if s.stopped() || (i > 0 && !s.pause(job.create_pause_ms)) {
            break;
        }
        let workflows = batch.map(|index| workflow_id(s.ledger.run, index));
        let tasks = workflows.flat_map(|w| (0..job.tasks_per_workflow).map(move |t| (w, t)));
        let new =
            |(w, t)| NewTaskExecution::new(w, format!("task-{t}")).with_status(TaskStatus::Ready);
        let news: Vec<_> = tasks.map(|wt| new(wt).with_max_attempts(job.max_attempts)).collect();
        let created = metrics.time(Op::CreateMany, || s.store.create_many(&news));
        let Ok(created) = created.map_err(|err| s.fail("create_many", err)) else { break };
        s.changed(&mut metrics, &created, None);
        let record =
            recorder.as_mut().map(|r| metrics.time(Op::RecordBatch, || r.created(number + 1)));
        if let Some(Err(err)) = record {
            s.fail("the run record", err);
            break;
        }
    }
    let _ = s.creation.set(start.elapsed());
    metrics
}

/// A small deterministic generator (xorshift64*) of failures and crashes.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// One runner: each `finish_and_claim` finishes the batch it holds (completions, failures on
/// the last attempt, failures to retry) and claims the next. A crashing runner now and then
/// dies mid-batch, leaving its claims, and comes back under a new id; once its old leases are
/// surely stale it tries to finish them: the store refuses those the sweeper recovered.
fn runner(s: &Shared, index: u32) -> Metrics {
    let (job, mut metrics) = (s.job, Metrics::default());
    let seed = job.seed.wrapping_add(u64::from(index) * 7919);
    let mut dice = Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let stale_after = Duration::from_millis(job.stale_after_ms);
    let surely_stale = stale_after + 2 * Duration::from_millis(job.sweep_every_ms);
    let mut id = Uuid::now_v7();
    // The runner id it works under; what a crash left behind: the id it had, its leases (as
    // completions), and when.
    let mut left: Option<(Uuid, Finished, Instant)> = None;
    let mut finished = Finished::default();
    while !s.stopped() {
        if let Some((old, leases, _)) = left.take_if(|(.., at)| at.elapsed() > surely_stale) {
            cycle(s, &mut metrics, (Op::StaleFinishAndClaim, old), &leases, 0);
        }
        let op = (Op::FinishAndClaim, id);
        let Some(claimed) = cycle(s, &mut metrics, op, &finished, job.batch) else {
            break;
        };
        finished = Finished::default();
        if claimed.is_empty() {
            // Nothing due: wait a little before asking again.
            metrics.count(Outcome::EmptyClaims, 1);
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        metrics.count(Outcome::Claims, claimed.len());
        s.ledger.record(claimed.iter().map(|c| c.task.workflow_execution_id), None);
        let crash = index < job.crashing_runners && dice.chance(job.crash_rate);
        let crash_at = crash.then(|| (dice.next() % claimed.len() as u64) as usize);
        let mut last_beat = Instant::now();
        for (i, Claimed { task, lease }) in claimed.iter().enumerate() {
            if crash_at == Some(i) {
                // What it did is lost; what it held stays claimed until the sweeper sees its
                // heartbeats stop.
                metrics.count(Outcome::Crashes, 1);
                let completed = claimed.iter().map(|c| c.lease).collect();
                let leases = Finished { completed, ..Finished::default() };
                left = Some((id, leases, Instant::now()));
                (id, finished) = (Uuid::now_v7(), Finished::default());
                break;
            }
            if last_beat.elapsed() > stale_after / 4 {
                for claim in &claimed {
                    // A claim the sweeper recovered is lost; its task may even be gone.
                    match metrics.time(Op::Heartbeat, || s.store.heartbeat(&claim.lease)) {
                        Ok(_) | Err(DalError::ClaimLost { .. } | DalError::NotFound { .. }) => {}
                        Err(err) => s.fail("heartbeat", err),
                    }
                }
                last_beat = Instant::now();
            }
            if job.work_us > 0 {
                thread::sleep(Duration::from_micros(job.work_us));
            }
            if !dice.chance(job.fail_rate) {
                finished.completed.push(*lease);
                continue;
            }
            let (lease, error, retry_at) = (*lease, "simulated failure".to_owned(), Utc::now());
            if task.attempt < task.max_attempts {
                finished.retried.push(RetriedTask { lease, error, retry_at });
            } else {
                finished.failed.push(FailedTask { lease, error });
            }
        }
    }
    // What the last batch finished, when the run stopped before the next cycle.
    if !finished.is_empty() {
        cycle(s, &mut metrics, (Op::FinishAndClaim, id), &finished, 0);
    }
    metrics
}

/// One `finish_and_claim` of a runner, counted; what it claimed, or `None` when it failed (the
/// run then stops). With a crashed runner's old leases (`StaleFinishAndClaim`) a lost lease is
/// a stale completion refused; with a live runner's, a claim lost while it worked.
fn cycle(
    s: &Shared,
    metrics: &mut Metrics,
    (op, runner): (Op, Uuid),
    finished: &Finished,
    limit: u32,
) -> Option<Vec<Claimed>> {
    let cycle = metrics.time(op, || s.store.finish_and_claim(runner, finished, limit));
    let cycle = cycle.map_err(|err| s.fail("finish_and_claim", err)).ok()?;
    if let Op::StaleFinishAndClaim = op {
        metrics.count(Outcome::StaleRefused, cycle.lost.len());
        metrics.count(Outcome::StaleAccepted, cycle.completed.len());
    } else {
        metrics.count(Outcome::ClaimsLost, cycle.lost.len());
    }
    s.changed(metrics, &cycle.completed, Some(Outcome::Completed));
    s.changed(metrics, &cycle.failed, Some(Outcome::Exhausted));
    s.changed(metrics, &cycle.retried, None);
    metrics.count(Outcome::Failures, cycle.failed.len() + cycle.retried.len());
    metrics.count(Outcome::Retries, cycle.retried.len());
    Some(cycle.claimed)
}

/// The sweeper: recovers the claims of runners that stopped heart-beating.
fn sweeper(s: &Shared) -> Metrics {
    let (job, mut metrics) = (s.job, Metrics::default());
    let stale_after = TimeDelta::milliseconds(job.stale_after_ms as i64);
    while s.pause(job.sweep_every_ms) {
        let older_than = Utc::now() - stale_after;
        let sweep = || s.store.recover_stale_claims(older_than, job.max_recoveries);
        match metrics.time(Op::RecoverStaleClaims, sweep) {
            Ok(recovery) => {
                metrics.count(Outcome::Recovered, recovery.reset.len());
                s.changed(&mut metrics, &recovery.reset, None);
                s.changed(&mut metrics, &recovery.abandoned, Some(Outcome::Abandoned));
            }
            Err(err) => s.fail("recover_stale_claims", err),
        }
    }
    metrics
}

/// How often the pruner makes a full retention pass instead of an incremental one.
const FULL_PASS_EVERY: Duration = Duration::from_secs(30);

/// How far before the start of the last complete pass an incremental pass starts.
const PASS_MARGIN: TimeDelta = TimeDelta::seconds(2);

/// The pruner: every `--prune-every-ms` a retention pass, `prune_finished` batch after batch
/// until the cursor runs out. A pass starts with the tasks that finished since the last
/// complete pass began (less a margin); a full pass now and then.
fn pruner(s: &Shared) -> Metrics {
    let (job, mut metrics) = (s.job, Metrics::default());
    let retain = TimeDelta::milliseconds(job.retain_ms as i64);
    let mut since: Option<DateTime<Utc>> = None;
    let mut full_pass_at = Instant::now();
    'passes: while s.pause(job.prune_every_ms) {
        let older_than = Utc::now() - retain;
        if full_pass_at.elapsed() >= FULL_PASS_EVERY || since.is_none() {
            (since, full_pass_at) = (None, Instant::now());
        }
        let mut after = since.map(PruneCursor::finished_since);
        loop {
            let prune = || s.store.prune_finished(older_than, job.prune_batch, after);
            let pruned = match metrics.time(Op::PruneFinished, prune) {
                Ok(pruned) => pruned,
                Err(err) => {
                    s.fail("prune_finished", err);
                    break 'passes;
                }
            };
            metrics.count(Outcome::PrunedWorkflows, pruned.workflows.len());
            metrics.count(Outcome::PrunedTasks, pruned.tasks as usize);
            metrics.count(Outcome::PrunedEvents, pruned.events as usize);
            s.ledger.pruned(&pruned);
            after = pruned.next;
            if after.is_none() {
                metrics.count(Outcome::PrunePasses, 1);
                since = Some(older_than - PASS_MARGIN);
                break;
            }
            if s.stopped() {
                break 'passes;
            }
        }
    }
    metrics
}
