//! The report of a run: printed, and written as JSON with `--json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::args::Job;
use super::checks::Check;
use super::footprint::Relation;
use super::metrics::OperationLatency;
use super::plan::Resumed;

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
