//! The report of a run: printed, and written as JSON with `--json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::args::Retention;
use super::checks::Check;
use super::footprint::{DUE_INDEX, Footprint};
use super::metrics::OperationLatency;
use super::plan::Resumed;

/// Everything a run measured and checked.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The database (no password).
    pub location: String,
    /// The run's id, as recorded in its database.
    pub run_id: String,
    /// What the database held when the run resumed (`--resume`), if it did.
    pub resumed: Option<Resumed>,
    /// Workflow executions.
    pub workflows: u32,
    /// Tasks of the run.
    pub tasks: u64,
    /// Of which this process took to the end of their life (all of them, unless resumed).
    pub tasks_run: u64,
    /// Runner threads.
    pub runners: u32,
    /// Of which crash now and then.
    pub crashing_runners: u32,
    /// Claim batch size.
    pub batch: u32,
    /// Simulated work per task, µs.
    pub work_us: u64,
    /// Share of executions that fail.
    pub fail_rate: f64,
    /// Chance of a crash per batch of a crashing runner.
    pub crash_rate: f64,
    /// The pruner's settings.
    pub retention: Retention,
    /// Seconds from the first create to the last task's end.
    pub elapsed_s: f64,
    /// Seconds from the first create to the end of the last creation batch: a run whose
    /// runners keep up with the creator ends soon after.
    pub creation_s: f64,
    /// Tasks through their whole life per second (of `tasks_run`).
    pub tasks_per_second: f64,
    /// Statements sent during the run (Diesel instrumentation; `BEGIN`/`COMMIT` included).
    pub statements: u64,
    /// Statements per task, over its whole life (creation, claims, completion, failures,
    /// retries, recoveries, heartbeats and sweeps shared out).
    pub statements_per_task: f64,
    /// Statements prepared into the connections' caches (first uses).
    pub prepares: u64,
    /// Transactions begun.
    pub transactions: u64,
    /// Latency per operation.
    pub operations: BTreeMap<String, OperationLatency>,
    /// What happened, as counted.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// The correctness checks.
    pub checks: Vec<Check>,
    /// Whether every check passed.
    pub passed: bool,
    /// Table and index sizes and counters after the run, when they could be read.
    pub footprint: Option<Footprint>,
}

impl Report {
    /// The report for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "workload on {} ({}): {} tasks in {} workflow executions, {} runners ({} crashing), claims of {}, \
             {}% failing, work {} µs",
            self.backend,
            self.location,
            self.tasks,
            self.workflows,
            self.runners,
            self.crashing_runners,
            self.batch,
            self.fail_rate * 100.0,
            self.work_us
        );
        if let Some(r) = &self.resumed {
            let _ = writeln!(
                out,
                "  resumed run {}: {} workflow executions stored, {} pruned before, {} to create; \
                 {} tasks finished, {} claimed by the dead process, {} failed and not yet retried; \
                 {} events",
                r.run_id,
                r.workflows_stored,
                r.workflows_pruned,
                r.workflows_to_create,
                r.tasks_finished,
                r.tasks_claimed,
                r.tasks_to_retry,
                r.events
            );
        }
        let _ = if self.retention.enabled() {
            writeln!(
                out,
                "  retention: a pass every {} ms, batches of {}, keeping {} ms",
                self.retention.prune_every_ms, self.retention.prune_batch, self.retention.retain_ms
            )
        } else {
            writeln!(out, "  retention: off")
        };
        let _ = writeln!(
            out,
            "  {:.0} tasks/s through their whole life ({} tasks in {:.2} s, the last created after {:.2} s)",
            self.tasks_per_second, self.tasks_run, self.elapsed_s, self.creation_s
        );
        let _ = writeln!(
            out,
            "  {} statements, {:.2} per task; {} transactions; {} statements prepared",
            self.statements, self.statements_per_task, self.transactions, self.prepares
        );
        let _ = writeln!(
            out,
            "  {:<22}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "operation", "calls", "p50 µs", "p95 µs", "p99 µs", "max µs"
        );
        for (op, l) in &self.operations {
            let _ = writeln!(
                out,
                "  {op:<22}{:>10}{:>10}{:>10}{:>10}{:>10}",
                l.calls, l.p50_us, l.p95_us, l.p99_us, l.max_us
            );
        }
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "  outcomes: {}", outcomes.join(", "));
        let _ = writeln!(out, "  checks:");
        for check in &self.checks {
            let mark = if check.passed { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "    [{mark}] {}: {}", check.name, check.detail);
        }
        if let Some(footprint) = &self.footprint {
            render_footprint(&mut out, footprint);
        }
        out
    }
}

fn render_footprint(out: &mut String, footprint: &Footprint) {
    let _ = writeln!(out, "  footprint after the run:");
    if let Some(file) = &footprint.file {
        let _ = writeln!(
            out,
            "    database file {} ({} in free pages)",
            bytes(file.bytes),
            bytes(file.free_bytes)
        );
    }
    for relation in &footprint.relations {
        let indent = if relation.kind == "index" { "  " } else { "" };
        let name = format!("{indent}{}", relation.name);
        let _ = write!(
            out,
            "    {name:<42}{:>6}{:>12}",
            relation.kind,
            bytes(relation.bytes)
        );
        if let Some(t) = footprint.tables.iter().find(|t| t.table == relation.name) {
            let _ = write!(
                out,
                "   live {}, dead {}, autovacuums {}, autoanalyzes {}",
                t.live_tuples, t.dead_tuples, t.autovacuums, t.autoanalyzes
            );
        }
        let _ = writeln!(out);
    }
    if let Some(reads) = &footprint.index_reads {
        let _ = writeln!(
            out,
            "    index entries read per claim_ready ({} calls, {} scans of {DUE_INDEX}): {:.1} from \
             {DUE_INDEX}, {:.1} from all indexes of task_executions",
            reads.claims,
            reads.due_index_scans,
            reads.due_index_per_claim,
            reads.all_indexes_per_claim
        );
    }
}

/// A size in bytes for people: B, KiB, MiB or GiB.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
