//! Latency histograms per operation and the outcome counters of a run.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// The operations whose latency the report shows: the store's, and `record_batch`, the
/// workload's own update of its run record after each creation batch (not a DAL call).
pub const OPERATIONS: [&str; 12] = [
    "create_many",
    "finish_and_claim",
    "claim_ready",
    "heartbeat",
    "complete_many",
    "fail",
    "fail_and_retry",
    "schedule_retry",
    "recover_stale_claims",
    "stale_complete_many",
    "prune_finished",
    "record_batch",
];

/// Latencies, per thread: each runner records into its own and the run merges them at the end.
#[derive(Debug)]
pub struct Latencies {
    histograms: BTreeMap<&'static str, Histogram<u64>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            histograms: OPERATIONS
                .iter()
                .filter_map(|op| {
                    Histogram::new_with_bounds(1, 60_000_000, 3)
                        .ok()
                        .map(|h| (*op, h))
                })
                .collect(),
        }
    }
}

impl Latencies {
    /// Runs `f`, recording how long it took under `operation`.
    pub fn time<T>(&mut self, operation: &'static str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.record(operation, start.elapsed());
        out
    }

    /// Records one call of `operation` that took `took`.
    pub fn record(&mut self, operation: &'static str, took: Duration) {
        debug_assert!(
            OPERATIONS.contains(&operation),
            "{operation} is not in OPERATIONS"
        );
        if let Some(histogram) = self.histograms.get_mut(operation) {
            let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
            histogram.saturating_record(micros);
        }
    }

    /// Adds `other`'s records to these.
    pub fn merge(&mut self, other: &Latencies) {
        for (op, histogram) in &other.histograms {
            if let Some(mine) = self.histograms.get_mut(op) {
                let _ = mine.add(histogram);
            }
        }
    }

    /// The summary of each operation that was called.
    pub fn summary(&self) -> BTreeMap<String, OperationLatency> {
        self.histograms
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(op, h)| {
                (
                    (*op).to_owned(),
                    OperationLatency {
                        calls: h.len(),
                        p50_us: h.value_at_quantile(0.50),
                        p95_us: h.value_at_quantile(0.95),
                        p99_us: h.value_at_quantile(0.99),
                        max_us: h.max(),
                    },
                )
            })
            .collect()
    }
}

/// The latency of one operation over a run.
#[derive(Debug, Clone, Serialize)]
pub struct OperationLatency {
    /// Calls made.
    pub calls: u64,
    /// Median, µs.
    pub p50_us: u64,
    /// 95th percentile, µs.
    pub p95_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Slowest, µs.
    pub max_us: u64,
}

/// What happened during a run, counted by the runners and the sweeper as it happened.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// Tasks claimed (claims, not tasks: a task recovered and claimed again counts twice).
    pub claims: AtomicU64,
    /// Tasks completed.
    pub completed: AtomicU64,
    /// Failed executions.
    pub failures: AtomicU64,
    /// Retries scheduled.
    pub retries: AtomicU64,
    /// Tasks that failed on their last attempt.
    pub exhausted: AtomicU64,
    /// Runner crashes.
    pub crashes: AtomicU64,
    /// Tasks reset by the sweeper.
    pub recovered: AtomicU64,
    /// Tasks abandoned by the sweeper.
    pub abandoned: AtomicU64,
    /// Completions a runner made after it came back from a crash, with its old lease, that
    /// were refused (`ClaimLost`): the task had been recovered meanwhile.
    pub stale_refused: AtomicU64,
    /// Such completions that went through: the sweeper had not recovered the task yet, so the
    /// lease was still the current claim.
    pub stale_accepted: AtomicU64,
    /// `ClaimLost` met by live runners (their task was recovered while they worked on it).
    pub claims_lost: AtomicU64,
    /// Tasks a runner was still holding when another runner claimed them: the first was
    /// presumed dead (its heartbeats came later than the staleness threshold) and its late
    /// completion is refused by the lease. Not a double claim: the first claim had ended.
    pub overlapping_executions: AtomicU64,
    /// Retention passes the pruner finished (each a run of `prune_finished` batches until the
    /// cursor ran out).
    pub prune_passes: AtomicU64,
    /// `prune_finished` calls.
    pub prune_batches: AtomicU64,
    /// Workflow executions removed by retention.
    pub pruned_workflows: AtomicU64,
    /// Task executions removed with them.
    pub pruned_tasks: AtomicU64,
    /// Execution events removed with them.
    pub pruned_events: AtomicU64,
    /// Claims (and runner cycles) that found no task due: the runner waited 1 ms and asked
    /// again. Many of them mean the runners outpaced the creator.
    pub empty_claims: AtomicU64,
}

impl Outcomes {
    /// Adds one to `counter`.
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot for the report.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BTreeMap::from([
            ("claims", get(&self.claims)),
            ("completed", get(&self.completed)),
            ("failures", get(&self.failures)),
            ("retries", get(&self.retries)),
            ("exhausted", get(&self.exhausted)),
            ("crashes", get(&self.crashes)),
            ("recovered", get(&self.recovered)),
            ("abandoned", get(&self.abandoned)),
            ("stale_completions_refused", get(&self.stale_refused)),
            ("stale_completions_accepted", get(&self.stale_accepted)),
            ("claims_lost", get(&self.claims_lost)),
            ("overlapping_executions", get(&self.overlapping_executions)),
            ("prune_passes", get(&self.prune_passes)),
            ("prune_batches", get(&self.prune_batches)),
            ("pruned_workflows", get(&self.pruned_workflows)),
            ("pruned_tasks", get(&self.pruned_tasks)),
            ("pruned_events", get(&self.pruned_events)),
            ("empty_claims", get(&self.empty_claims)),
        ])
    }
}

/// Latencies collected from the threads.
#[derive(Debug, Default)]
pub struct Collected(Mutex<Latencies>);

impl Collected {
    /// Merges a thread's latencies.
    pub fn add(&self, latencies: &Latencies) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .merge(latencies);
    }

    /// The merged summary.
    pub fn summary(&self) -> BTreeMap<String, OperationLatency> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .summary()
    }
}
