//! What a run measures (each operation's latency, each outcome's count: [`Metrics`], per thread
//! then summed) and its [`Report`], printed and written as JSON with `--json`.

use std::{collections::BTreeMap, time::Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{args::Job, db::Relation, ledger::Resumed};

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
    /// The store's calls timed, the run record's updates, and crashed runners' old leases.
    enum Op {
        CreateMany = "create_many", RecordBatch = "record_batch",
        FinishAndClaim = "finish_and_claim", StaleFinishAndClaim = "stale_finish_and_claim",
        Heartbeat = "heartbeat", RecoverStaleClaims = "recover_stale_claims",
        PruneFinished = "prune_finished",
    }
}

named! {
    /// What happened, first how tasks finished (failures: retried or exhausted). A crashed runner's
    /// old leases are refused (recovered meanwhile) or accepted; a live runner's lost leases are
    /// `claims_lost`; `empty_claims`: cycles that found nothing due, each followed by a wait,
    /// which ended woken (`wakeups`), timed out (`wait_timeouts`), or slept 1 ms (`--wait poll`).
    enum Outcome {
        Completed = "completed", Exhausted = "exhausted", Abandoned = "abandoned",
        Claims = "claims", Failures = "failures", Retries = "retries", Crashes = "crashes",
        Recovered = "recovered", StaleRefused = "stale_completions_refused",
        StaleAccepted = "stale_completions_accepted", ClaimsLost = "claims_lost",
        PrunePasses = "prune_passes", PrunedWorkflows = "pruned_workflows",
        PrunedTasks = "pruned_tasks", PrunedEvents = "pruned_events", EmptyClaims = "empty_claims",
        Wakeups = "wakeups", WaitTimeouts = "wait_timeouts",
    }
}

/// One thread's latencies and outcome counts, or the sum of several.
#[derive(Debug)]
pub struct Metrics {
    latencies: Vec<Option<Histogram<u64>>>,
    outcomes: Vec<u64>,
}

/// An operation's calls over a run, and their latencies in µs.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct OperationLatency {
    pub calls: u64,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 60_000_000, 3).ok();
        let latencies = Op::NAMES.iter().map(|_| histogram()).collect();
        Metrics { latencies, outcomes: vec![0; Outcome::NAMES.len()] }
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

    pub(crate) fn count(&mut self, outcome: Outcome, n: usize) {
        self.outcomes[outcome as usize] += n as u64;
    }

    pub(crate) fn get(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome as usize]
    }

    pub(crate) fn merge(&mut self, other: &Metrics) {
        for (mine, theirs) in self.latencies.iter_mut().zip(&other.latencies) {
            if let (Some(mine), Some(theirs)) = (mine, theirs) {
                let _ = mine.add(theirs);
            }
        }
        self.outcomes.iter_mut().zip(&other.outcomes).for_each(|(mine, theirs)| *mine += theirs);
    }

    /// The latency of each operation called, by name.
    pub fn operations(&self) -> BTreeMap<String, OperationLatency> {
        let called = self.latencies.iter().zip(Op::NAMES).filter_map(|(h, name)| {
            let h = h.as_ref().filter(|h| !h.is_empty())?;
            let [p50_us, p95_us, p99_us] = [0.5, 0.95, 0.99].map(|q| h.value_at_quantile(q));
            Some((
                name.to_string(),
                OperationLatency { calls: h.len(), p50_us, p95_us, p99_us, max_us: h.max() },
            ))
        });
        called.collect()
    }

    /// Every outcome's count, by name.
    pub fn outcomes(&self) -> BTreeMap<&'static str, u64> {
        Outcome::NAMES.iter().copied().zip(self.outcomes.iter().copied()).collect()
    }
}

/// One check: what is checked, whether it held, and its figures or first counterexample.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Everything a run measured and checked. `tasks_run`: those this process took through their life,
/// in `elapsed_s` (`creation_s`: to the last creation); `statements`: `BEGIN`/`COMMIT` included.
#[derive(Debug, Clone, Serialize)]
#[allow(missing_docs)]
pub struct Report {
    pub backend: &'static str,
    pub location: String,
    pub run_id: String,
    pub resumed: Option<Resumed>,
    #[serde(flatten)]
    pub job: Job,
    pub tasks: u64,
    pub tasks_run: u64,
    pub elapsed_s: f64,
    pub creation_s: f64,
    pub tasks_per_second: f64,
    pub statements: u64,
    pub statements_per_task: f64,
    pub operations: BTreeMap<String, OperationLatency>,
    pub outcomes: BTreeMap<&'static str, u64>,
    pub checks: Vec<Check>,
    pub passed: bool,
    pub footprint: Option<Vec<Relation>>,
}

impl Report {
    /// The report for people.
    pub fn render(&self) -> String {
        let (j, r, location, tasks) = (&self.job, &self.resumed, &self.location, self.tasks);
        let Job { workflows, runners, crashing_runners, batch, work_us, wait, .. } = j;
        let mut out = format!(
            "workload on {} ({location}): {tasks} tasks in {workflows} workflow executions, \
             {runners} runners ({crashing_runners} crashing), claims of {batch} (empty: {wait}), \
             {}% failing, work {work_us} µs\n",
            self.backend,
            j.fail_rate * 100.0
        );
        if let Some(r) = r {
            let (stored, removed, to_create) =
                (r.workflows_stored, r.workflows_pruned, r.workflows_to_create);
            let (finished, claimed, events) = (r.tasks_finished, r.tasks_claimed, r.events);
            out += &format!(
                "  resumed run {}: {stored} workflow executions stored, {removed} removed, \
                 {to_create} to create; {finished} tasks finished, {claimed} claimed by the dead \
                 process; {events} events\n",
                self.run_id
            );
        }
        let (every, batch, retain) = (j.prune_every_ms, j.prune_batch, j.retain_ms);
        let pass = format!("a pass every {every} ms, batches of {batch}, keeping {retain} ms");
        out += &format!("  retention: {}\n", if every == 0 { "off" } else { &pass });
        let (speed, run, elapsed) = (self.tasks_per_second, self.tasks_run, self.elapsed_s);
        let (created, statements, per_task) =
            (self.creation_s, self.statements, self.statements_per_task);
        out += &format!(
            "  {speed:.0} tasks/s through their whole life ({run} tasks in {elapsed:.2} s, the last \
             created after {created:.2} s)\n  {statements} statements, {per_task:.2} per task\n"
        );
        out += "  operation                    calls    p50 µs    p95 µs    p99 µs    max µs\n";
        for (op, l) in &self.operations {
            let (calls, p50, p95, p99, max) = (l.calls, l.p50_us, l.p95_us, l.p99_us, l.max_us);
            out += &format!("  {op:<24}{calls:>10}{p50:>10}{p95:>10}{p99:>10}{max:>10}\n");
        }
        let outcomes: Vec<String> = self.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
        out += &format!("  outcomes: {}\n  checks:\n", outcomes.join(", "));
        for c in &self.checks {
            let mark = if c.passed { "ok  " } else { "FAIL" };
            out += &format!("    [{mark}] {}: {}\n", c.name, c.detail);
        }
        out += "  footprint after the run:\n";
        for r in self.footprint.iter().flatten() {
            let name = format!("{}{}", if r.kind == "index" { "  " } else { "" }, r.name);
            out += &format!("    {name:<42}{:>6}{:>12}", r.kind, bytes(r.bytes));
            let vacuums = r.autovacuums.unwrap_or_default();
            let extras = [
                r.free_bytes.map(|free| format!("of which free pages {}", bytes(free))),
                (r.live_rows.zip(r.dead_rows)).map(|(live, dead)| {
                    format!("live rows {live}, dead {dead}, autovacuums {vacuums}")
                }),
                r.read_per_claim.map(|reads| format!("{reads:.1} entries read per claim")),
            ];
            extras.into_iter().flatten().for_each(|extra| out += &format!("   {extra}"));
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
