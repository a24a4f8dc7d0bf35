//! What a run measures (the latency of each operation and the count of each outcome, each
//! thread keeping its own [`Metrics`], added to the run's when the thread ends) and its
//! [`Report`]: printed, and written as JSON with `--json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::args::Job;
use super::db::Relation;
use super::ledger::Resumed;

/// An enum whose variants have the names the report gives them, in order.
macro_rules! named {
    ($(#[$doc:meta])* enum $name:ident { $($variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub(crate) enum $name { $($variant,)* }
        impl $name {
            const NAMES: &[&str] = &[$($text,)*];
        }
    };
}

named! {
    /// The operations timed: the store's calls, and the run record's update after each creation
    /// batch (`record_batch`). `stale_finish_and_claim`: a crashed runner's old leases.
    enum Op {
        CreateMany = "create_many", RecordBatch = "record_batch",
        FinishAndClaim = "finish_and_claim", StaleFinishAndClaim = "stale_finish_and_claim",
        Heartbeat = "heartbeat", RecoverStaleClaims = "recover_stale_claims",
        PruneFinished = "prune_finished",
    }
}

named! {
    /// What happened; first how tasks finished. Failures are retried or, on their last attempt,
    /// exhausted. A crashed
    /// runner's old leases come back refused (lost: recovered meanwhile) or accepted (still
    /// current); a live runner's lost leases are `claims_lost`. `empty_claims`: cycles that
    /// found nothing due, each followed by a wait.
    enum Outcome {
        Completed = "completed", Exhausted = "exhausted", Abandoned = "abandoned",
        Claims = "claims", Failures = "failures", Retries = "retries", Crashes = "crashes",
        Recovered = "recovered", StaleRefused = "stale_completions_refused",
        StaleAccepted = "stale_completions_accepted", ClaimsLost = "claims_lost",
        PrunePasses = "prune_passes", PrunedWorkflows = "pruned_workflows",
        PrunedTasks = "pruned_tasks", PrunedEvents = "pruned_events", EmptyClaims = "empty_claims",
    }
}

/// One thread's latencies and outcome counts, or the sum of several.
#[derive(Debug)]
pub struct Metrics {
    latencies: Vec<Option<Histogram<u64>>>,
    outcomes: Vec<u64>,
}

/// The latency of one operation over a run, in µs.
#[derive(Debug, Clone, Serialize)]
pub struct OperationLatency {
    /// Calls made.
    pub calls: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 60_000_000, 3).ok();
        Metrics {
            latencies: Op::NAMES.iter().map(|_| histogram()).collect(),
            outcomes: vec![0; Outcome::NAMES.len()],
        }
    }
}

impl Metrics {
    /// Runs `f`, recording how long it took under `op`.
    pub(crate) fn time<T>(&mut self, op: Op, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        if let Some(histogram) = &mut self.latencies[op as usize] {
            let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            histogram.saturating_record(micros.max(1));
        }
        out
    }

    /// Adds `n` to `outcome`.
    pub(crate) fn count(&mut self, outcome: Outcome, n: usize) {
        self.outcomes[outcome as usize] += n as u64;
    }

    /// The count of `outcome`.
    pub(crate) fn get(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize]
    }

    /// Adds `other`'s records to these.
    pub fn merge(&mut self, other: &Metrics) {
        for (mine, theirs) in self.latencies.iter_mut().zip(&other.latencies) {
            if let (Some(mine), Some(theirs)) = (mine, theirs) {
                let _ = mine.add(theirs);
            }
        }
        for (mine, theirs) in self.outcomes.iter_mut().zip(&other.outcomes) {
            *mine += theirs;
        }
    }

    /// The latency of each operation called, by name.
    pub fn operations(&self) -> BTreeMap<String, OperationLatency> {
        let mut operations = BTreeMap::new();
        for (h, name) in self.latencies.iter().zip(Op::NAMES) {
            let Some(h) = h.as_ref().filter(|h| !h.is_empty()) else {
                continue;
            };
            let latency = OperationLatency {
                calls: h.len(),
                p50_us: h.value_at_quantile(0.50),
                p95_us: h.value_at_quantile(0.95),
                p99_us: h.value_at_quantile(0.99),
                max_us: h.max(),
            };
            operations.insert(name.to_string(), latency);
        }
        operations
    }

    /// Every outcome's count, by name.
    pub fn outcomes(&self) -> BTreeMap<&'static str, u64> {
        let counts = self.outcomes.iter().copied();
        Outcome::NAMES.iter().copied().zip(counts).collect()
    }
}

/// One check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// Whether it held.
    pub passed: bool,
    /// Figures, or the first counterexample.
    pub detail: String,
}

/// Everything a run measured and checked.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The database (no password).
    pub location: String,
    /// The run's id.
    pub run_id: String,
    /// What the database held when the run resumed, if it did.
    pub resumed: Option<Resumed>,
    /// What was run.
    #[serde(flatten)]
    pub job: Job,
    /// Tasks of the run.
    pub tasks: u64,
    /// Of which this process took through their whole life (all, unless resumed).
    pub tasks_run: u64,
    /// Seconds from the first creation to the last task's end.
    pub elapsed_s: f64,
    /// Seconds from the first creation to the end of the last creation batch.
    pub creation_s: f64,
    /// `tasks_run` per second.
    pub tasks_per_second: f64,
    /// Statements the store's connections sent (`BEGIN`/`COMMIT` included).
    pub statements: u64,
    /// Per task run.
    pub statements_per_task: f64,
    /// Latency per operation.
    pub operations: BTreeMap<String, OperationLatency>,
    /// What happened, as counted.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// The correctness checks.
    pub checks: Vec<Check>,
    /// Whether every check passed.
    pub passed: bool,
    /// Table and index sizes after the run, when they could be read.
    pub footprint: Option<Vec<Relation>>,
}

impl Report {
    /// The report for people.
    pub fn render(&self) -> String {
        let (job, tasks, location) = (&self.job, self.tasks, &self.location);
        let (workflows, runners, batch) = (job.workflows, job.runners, job.batch);
        let (crashing, failing, work) = (job.crashing_runners, job.fail_rate * 100.0, job.work_us);
        let mut out = format!(
            "workload on {} ({location}): {tasks} tasks in {workflows} workflow executions, \
             {runners} runners ({crashing} crashing), claims of {batch}, {failing}% failing, \
             work {work} µs\n",
            self.backend
        );
        if let Some(r) = &self.resumed {
            let (stored, removed) = (r.workflows_stored, r.workflows_pruned);
            let to_create = r.workflows_to_create;
            let (finished, claimed) = (r.tasks_finished, r.tasks_claimed);
            let _ = writeln!(
                out,
                "  resumed run {}: {stored} workflow executions stored, {removed} removed, \
                 {to_create} to create; {finished} tasks finished, {claimed} claimed by the dead \
                 process; {} events",
                self.run_id, r.events
            );
        }
        let (every, batch, retain) = (job.prune_every_ms, job.prune_batch, job.retain_ms);
        out += &match every {
            0 => "  retention: off\n".to_owned(),
            _ => format!(
                "  retention: a pass every {every} ms, batches of {batch}, keeping {retain} ms\n"
            ),
        };
        let (speed, run) = (self.tasks_per_second, self.tasks_run);
        let (elapsed, created) = (self.elapsed_s, self.creation_s);
        let (statements, per_task) = (self.statements, self.statements_per_task);
        let _ = writeln!(
            out,
            "  {speed:.0} tasks/s through their whole life ({run} tasks in {elapsed:.2} s, the last \
             created after {created:.2} s)\n  {statements} statements, {per_task:.2} per task"
        );
        out += "  operation                    calls    p50 µs    p95 µs    p99 µs    max µs\n";
        for (op, l) in &self.operations {
            let (calls, p50, p95, p99, max) = (l.calls, l.p50_us, l.p95_us, l.p99_us, l.max_us);
            let row = format!("  {op:<24}{calls:>10}{p50:>10}{p95:>10}{p99:>10}{max:>10}\n");
            out += &row;
        }
        let outcomes = self.outcomes.iter().map(|(k, v)| format!("{k} {v}"));
        let outcomes: Vec<String> = outcomes.collect();
        let _ = writeln!(out, "  outcomes: {}\n  checks:", outcomes.join(", "));
        for check in &self.checks {
            let mark = if check.passed { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "    [{mark}] {}: {}", check.name, check.detail);
        }
        out += "  footprint after the run:\n";
        for r in self.footprint.iter().flatten() {
            let indent = if r.kind == "index" { "  " } else { "" };
            let (name, kind, size) = (format!("{indent}{}", r.name), &r.kind, bytes(r.bytes));
            let _ = write!(out, "    {name:<42}{kind:>6}{size:>12}");
            if let Some(free) = r.free_bytes {
                let _ = write!(out, "   of which free pages {}", bytes(free));
            }
            if let (Some(live), Some(dead)) = (r.live_rows, r.dead_rows) {
                let vacuums = r.autovacuums.unwrap_or_default();
                let _ = write!(out, "   live rows {live}, dead {dead}, autovacuums {vacuums}");
            }
            if let Some(reads) = r.read_per_claim {
                let _ = write!(out, "   {reads:.1} entries read per claim");
            }
            out.push('\n');
        }
        out
    }
}

/// A size in bytes for people: B, KiB, MiB or GiB.
pub fn bytes(n: i64) -> String {
    let (mut value, mut unit) = (n as f64, 0);
    while value.abs() >= 1024.0 && unit < 3 {
        (value, unit) = (value / 1024.0, unit + 1);
    }
    let decimals = usize::from(unit > 0);
    format!("{value:.decimals$} {}", ["B", "KiB", "MiB", "GiB"][unit])
}
