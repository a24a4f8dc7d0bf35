//! The run: a creator, runners, a sweeper and a pruner on one store, until every task settles.

use std::sync::{Mutex, OnceLock, PoisonError, atomic::AtomicBool, atomic::Ordering::Relaxed};
use std::{thread, time::Duration, time::Instant};

use chrono::{DateTime, TimeDelta, Utc};
use dal_core::{Claimed, DalError, FailedTask, Finished, NewTaskExecution, PruneCursor};
use dal_core::{RetriedTask, TaskExecution, TaskExecutionStore, TaskStatus, Wake};
use indicatif::{ProgressBar, ProgressStyle};
use uuid::Uuid;

use super::report::{Metrics, Op, Outcome};
use super::{args::Job, db::Recorder, ledger::Ledger, ledger::workflow_id};

/// What the run's threads share.
struct Shared<'a> {
    store: &'a dyn TaskExecutionStore,
    job: &'a Job,
    ledger: &'a Ledger,
    stop: AtomicBool,
    error: Mutex<Option<String>>,
    creation: OnceLock<Duration>,
}

/// Runs `job` until every task of `ledger` finished or was removed (`recorder` records each
/// creation batch), or the first error. Returns the metrics, the time to the last task's end and
/// to the end of the last creation batch.
pub fn run(
    store: &dyn TaskExecutionStore,
    job: &Job,
    ledger: &Ledger,
    recorder: Option<Recorder>,
    quiet: bool,
) -> Result<(Metrics, Duration, Duration), String> {
    let (stop, error, creation) = (AtomicBool::new(false), Mutex::new(None), OnceLock::new());
    let shared = Shared { store, job, ledger, stop, error, creation };
    let progress = if quiet { ProgressBar::hidden() } else { ProgressBar::new(job.tasks()) };
    let template = "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} tasks finished, {per_sec}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        progress.set_style(style.progress_chars("=> "));
    }
    let (s, start, mut metrics) = (&shared, Instant::now(), Metrics::default());
    let elapsed = thread::scope(|scope| {
        let mut threads = vec![scope.spawn(|| measured(|m| create(s, m, recorder, start)))];
        threads.push(scope.spawn(|| measured(|m| sweeper(s, m))));
        threads
            .extend((0..job.runners).map(|i| scope.spawn(move || measured(|m| runner(s, m, i)))));
        if job.prune_every_ms > 0 {
            threads.push(scope.spawn(|| measured(|m| pruner(s, m))));
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
    let error = shared.error.into_inner().unwrap_or_else(PoisonError::into_inner);
    error.map_or(Ok((metrics, elapsed, creation)), Err)
}

/// What `f` measured.
fn measured(f: impl FnOnce(&mut Metrics)) -> Metrics {
    let mut metrics = Metrics::default();
    f(&mut metrics);
    metrics
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

    /// Counts tasks a call changed, each with its event; finished `how`, if they did.
    fn changed(&self, metrics: &mut Metrics, tasks: &[TaskExecution], how: Option<Outcome>) {
        self.ledger.record(tasks.iter().map(|t| t.workflow_execution_id), how.map(|h| h as usize));
        how.into_iter().for_each(|how| metrics.count(how, tasks.len()));
    }
}

/// The scheduler: creates the tasks, `Ready`, a batch at a time, and records each batch made.
fn create(s: &Shared, metrics: &mut Metrics, mut recorder: Option<Recorder>, start: Instant) {
    let job = s.job;
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
        s.changed(metrics, &created, None);
        let record =
            recorder.as_mut().map(|r| metrics.time(Op::RecordBatch, || r.created(number + 1)));
        if let Some(Err(err)) = record {
            s.fail("the run record", err);
            break;
        }
    }
    let _ = s.creation.set(start.elapsed());
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

/// A runner: each `finish_and_claim` finishes the batch it holds and claims the next. A crashing
/// runner dies mid-batch now and then, leaving its claims, and comes back under a new id; once
/// they are surely stale it tries to finish them (the store refuses those the sweeper recovered).
fn runner(s: &Shared, metrics: &mut Metrics, index: u32) {
    let job = s.job;
    let seed = job.seed.wrapping_add(u64::from(index) * 7919);
    let mut dice = Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let stale_after = Duration::from_millis(job.stale_after_ms);
    let surely_stale = stale_after + 2 * Duration::from_millis(job.sweep_every_ms);
    // Its id; what a crash left: the id it had, its leases (as completions), and when.
    let (mut id, mut finished) = (Uuid::now_v7(), Finished::default());
    let mut left: Option<(Uuid, Finished, Instant)> = None;
    while !s.stopped() {
        if let Some((old, leases, _)) = left.take_if(|(.., at)| at.elapsed() > surely_stale) {
            cycle(s, metrics, (Op::StaleFinishAndClaim, old), &leases, 0);
        }
        let Some(claimed) = cycle(s, metrics, (Op::FinishAndClaim, id), &finished, job.batch)
        else {
            break;
        };
        finished = Finished::default();
        if claimed.is_empty() {
            // Nothing due: wait for work (seeing the stop flag every 100 ms), or a little.
            metrics.count(Outcome::EmptyClaims, 1);
            if job.wait == "poll" {
                thread::sleep(Duration::from_millis(1));
            } else {
                match s.store.wait_for_work(Duration::from_millis(100)) {
                    Ok(Wake::Work) => metrics.count(Outcome::Wakeups, 1),
                    Ok(Wake::Timeout) => metrics.count(Outcome::WaitTimeouts, 1),
                    Err(err) => s.fail("wait_for_work", err),
                }
            }
            continue;
        }
        metrics.count(Outcome::Claims, claimed.len());
        s.ledger.record(claimed.iter().map(|c| c.task.workflow_execution_id), None);
        let crash = index < job.crashing_runners && dice.chance(job.crash_rate);
        let crash_at = crash.then(|| (dice.next() % claimed.len() as u64) as usize);
        let mut last_beat = Instant::now();
        for (i, Claimed { task, lease }) in claimed.iter().enumerate() {
            if crash_at == Some(i) {
                // Its work lost; its claims held until the sweeper sees no heartbeats.
                metrics.count(Outcome::Crashes, 1);
                let completed = claimed.iter().map(|c| c.lease).collect();
                left = Some((id, Finished { completed, ..Finished::default() }, Instant::now()));
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
            let (lease, error) = (*lease, "simulated failure".to_owned());
            if !dice.chance(job.fail_rate) {
                finished.completed.push(lease);
            } else if task.attempt < task.max_attempts {
                finished.retried.push(RetriedTask { lease, error, retry_at: Utc::now() });
            } else {
                finished.failed.push(FailedTask { lease, error });
            }
        }
    }
    // What the last batch finished, when the run stopped before the next cycle.
    if !finished.is_empty() {
        cycle(s, metrics, (Op::FinishAndClaim, id), &finished, 0);
    }
}

/// A `finish_and_claim`, counted: what it claimed (`None`: it failed, the run stops). A lost lease
/// is a stale completion refused (`StaleFinishAndClaim`), else a claim lost while working.
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
fn sweeper(s: &Shared, metrics: &mut Metrics) {
    let stale_after = TimeDelta::milliseconds(s.job.stale_after_ms as i64);
    while s.pause(s.job.sweep_every_ms) {
        let older_than = Utc::now() - stale_after;
        let sweep = || s.store.recover_stale_claims(older_than, s.job.max_recoveries);
        match metrics.time(Op::RecoverStaleClaims, sweep) {
            Ok(recovery) => {
                metrics.count(Outcome::Recovered, recovery.reset.len());
                s.changed(metrics, &recovery.reset, None);
                s.changed(metrics, &recovery.abandoned, Some(Outcome::Abandoned));
            }
            Err(err) => s.fail("recover_stale_claims", err),
        }
    }
}

/// How often the pruner makes a full pass, and how far before the last one's start others start.
const FULL_PASS_EVERY: Duration = Duration::from_secs(30);
const PASS_MARGIN: TimeDelta = TimeDelta::seconds(2);

/// The pruner: every `--prune-every-ms` a pass of `prune_finished` batches until the cursor runs
/// out, from the tasks finished since the last complete pass began; a full pass now and then.
fn pruner(s: &Shared, metrics: &mut Metrics) {
    let retain = TimeDelta::milliseconds(s.job.retain_ms as i64);
    let (mut since, mut full_pass_at) = (None::<DateTime<Utc>>, Instant::now());
    while s.pause(s.job.prune_every_ms) {
        let older_than = Utc::now() - retain;
        if full_pass_at.elapsed() >= FULL_PASS_EVERY || since.is_none() {
            (since, full_pass_at) = (None, Instant::now());
        }
        let mut after = since.map(PruneCursor::finished_since);
        loop {
            let prune = || s.store.prune_finished(older_than, s.job.prune_batch, after);
            let pruned = match metrics.time(Op::PruneFinished, prune) {
                Ok(pruned) => pruned,
                Err(err) => return s.fail("prune_finished", err),
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
            } else if s.stopped() {
                return;
            }
        }
    }
}
