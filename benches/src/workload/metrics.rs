//! What a run measures: the latency of each operation and the count of each outcome. Each
//! thread keeps its own [`Metrics`], added to the run's when the thread ends.

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

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
