//! The workload's command line.

use std::path::PathBuf;

use clap::Parser;
use dal_core::store::MAX_PRUNE_BATCH;
use serde::{Deserialize, Serialize};

/// Many runners working through workflows on one store: creation in batches, claims in
/// batches, failures and retries, runners that crash mid-task and a sweeper that recovers their
/// tasks. Prints a report of throughput, latencies, statements per task and correctness checks;
/// exits with 1 when a check fails.
///
/// The run's arguments are recorded in its database; `--resume` finishes a run whose process
/// died (killed, crashed, the machine restarted) with the arguments recorded.
#[derive(Debug, Clone, Parser, Serialize, Deserialize)]
#[command(name = "workload", version)]
pub struct Args {
    /// Where to run: `postgres://...` or libpq's `host=... user=...` (a fresh schema is created
    /// there and dropped afterwards, or the one `--schema` names), or `sqlite://PATH`. Default: an embedded SQLite file in a
    /// temporary directory.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// PostgreSQL only: run in this schema (created if missing, never dropped) instead of a
    /// fresh one, so that `--resume` can find it.
    #[arg(long, value_name = "NAME", value_parser = schema_name)]
    pub schema: Option<String>,

    /// PostgreSQL only: the URL is a transaction-pooling proxy (PgBouncer's `pool_mode =
    /// transaction`). The store is opened with `Options::transaction_pooling`, and, since a
    /// proxy drops a connection's `options` (the `search_path` of a fresh schema), the run works
    /// in a fresh database instead, created through the URL with the store's planner settings
    /// made on it (`ALTER DATABASE ... SET`), and dropped afterwards. Not with `--schema` or
    /// `--resume`.
    #[arg(long)]
    #[serde(default)]
    pub transaction_pooling: bool,

    /// Finish the run recorded in the database (`sqlite://PATH`, or `--schema` on PostgreSQL)
    /// whose process died: its arguments are the recorded ones, the work already done is taken
    /// into account, claims the dead process held are recovered once stale, and the checks
    /// cover the whole run.
    #[arg(long, requires = "database_url", conflicts_with_all = PLAN_ARGS)]
    pub resume: bool,

    /// Workflow executions to create.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub workflows: u32,

    /// Tasks per workflow execution.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=5_000))]
    pub tasks_per_workflow: u32,

    /// Runner threads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub runners: u32,

    /// Tasks a runner claims at a time.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,

    /// Pause between two creation batches of 100 workflow executions, in milliseconds (0: none),
    /// for a scheduler that creates work over time.
    #[arg(long, default_value_t = 0)]
    pub create_pause_ms: u64,

    /// Simulated work per task, in microseconds (0: none).
    #[arg(long, default_value_t = 0)]
    pub work_us: u64,

    /// How a runner finishes a batch and claims the next: `one-statement`
    /// (`finish_and_claim`: completions, failures and the next claim in one call), or
    /// `two-statements` (each failure on its own with `fail`, then `complete_many`, then
    /// `claim_ready`).
    #[arg(long, value_enum, default_value_t = RunnerCycle::OneStatement)]
    #[serde(default)]
    pub cycle: RunnerCycle,

    /// How a runner fails a task that has attempts left: `in-cycle` (with the batch, in the
    /// next `finish_and_claim`'s `Finished::retried`: no call of its own; with `--cycle
    /// two-statements` as `fail-and-retry`), `fail-and-retry` (one call, `fail_and_retry`: the
    /// next attempt queued under the lease at once), or `fail-then-schedule` (`fail`, then
    /// `schedule_retry`: two calls, the protocol before `fail_and_retry`).
    #[arg(long, value_enum, default_value_t = RetryPath::InCycle)]
    #[serde(default)]
    pub retry: RetryPath,

    /// Whether the store writes the execution history (`kept`) or not (`off`, the store option
    /// for engines that keep none). With it off, the checks that read the history are left out
    /// of the report: only the rows are checked.
    #[arg(long, value_enum, default_value_t = HistoryMode::Kept)]
    #[serde(default)]
    pub history: HistoryMode,

    /// Share of task executions that fail (they are retried while attempts are left).
    #[arg(long, default_value_t = 0.05, value_parser = share)]
    pub fail_rate: f64,

    /// Attempts each task may make.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=1_000))]
    pub max_attempts: i32,

    /// Runners (of `--runners`) that crash now and then, mid-batch, leaving claimed tasks for
    /// the sweeper, then come back under a new runner id.
    #[arg(long, default_value_t = 1)]
    pub crashing_runners: u32,

    /// Chance that a crashing runner crashes during a given batch.
    #[arg(long, default_value_t = 0.05, value_parser = share)]
    pub crash_rate: f64,

    /// A claim whose heartbeat is older than this is stale and recovered by the sweeper (ms).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..))]
    pub stale_after_ms: u64,

    /// How often the sweeper runs (ms).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub sweep_every_ms: u64,

    /// Recoveries after which a stale task is abandoned.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(0..))]
    pub max_recoveries: i32,

    /// Retention: the pruner.
    #[command(flatten)]
    pub retention: Retention,

    /// Connections in the pool (default: runners + 2).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pool_size: Option<u32>,

    /// Seed of the simulated failures and crashes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Keep the database (the SQLite file or the PostgreSQL schema) after the run.
    #[arg(long)]
    pub keep: bool,

    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// How a runner finishes a batch and claims the next (`--cycle`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunnerCycle {
    /// `finish_and_claim`: one call per batch.
    #[default]
    OneStatement,
    /// `fail` per failure, `complete_many`, `claim_ready`: the protocol before
    /// `finish_and_claim`.
    TwoStatements,
}

/// How a runner fails a task that has attempts left (`--retry`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryPath {
    /// In the next `finish_and_claim`, with the rest of the batch: no call of its own.
    #[default]
    InCycle,
    /// `fail_and_retry`: one call.
    FailAndRetry,
    /// `fail`, then `schedule_retry`: two calls.
    FailThenSchedule,
}

/// `--history`: whether the store writes the execution history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HistoryMode {
    /// Every change writes its event (the store's default).
    #[default]
    Kept,
    /// No events.
    Off,
}

impl HistoryMode {
    /// The store's setting.
    pub fn store(self) -> dal_core::History {
        match self {
            HistoryMode::Kept => dal_core::History::Kept,
            HistoryMode::Off => dal_core::History::Off,
        }
    }
}

/// The pruner: every `--prune-every-ms` it runs a whole retention pass, `prune_finished` batch
/// after batch, removing the workflow executions finished more than `--retain-ms` ago.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct Retention {
    /// How often the pruner runs a retention pass (ms; 0: no pruning).
    #[arg(long, default_value_t = 500)]
    pub prune_every_ms: u64,

    /// Finished tasks each `prune_finished` batch scans (1 to 10,000).
    #[arg(
        long,
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PRUNE_BATCH))
    )]
    pub prune_batch: u32,

    /// Workflow executions whose last change is more recent than this are kept (ms, up to a
    /// year).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=MAX_RETAIN_MS))]
    pub retain_ms: u64,
}

/// The arguments that say what a run does, recorded with it: `--resume` takes them from the
/// record and refuses them on its command line.
const PLAN_ARGS: [&str; 18] = [
    "workflows",
    "tasks_per_workflow",
    "runners",
    "batch",
    "create_pause_ms",
    "work_us",
    "fail_rate",
    "max_attempts",
    "crashing_runners",
    "crash_rate",
    "stale_after_ms",
    "sweep_every_ms",
    "max_recoveries",
    "prune_every_ms",
    "prune_batch",
    "retain_ms",
    "pool_size",
    "seed",
];

/// The longest `--retain-ms`: a year.
const MAX_RETAIN_MS: u64 = 366 * 24 * 3_600 * 1_000;

impl Retention {
    /// Whether the pruner runs.
    pub fn enabled(&self) -> bool {
        self.prune_every_ms > 0
    }
}

/// A schema name the workload can quote without escaping: letters, digits and `_`, not
/// starting with a digit, at most 63 bytes (PostgreSQL's limit).
fn schema_name(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !text.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a plain schema name (letters, digits and _, at most 63)"
        ))
    }
}

fn share(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not between 0 and 1"))
    }
}

impl Args {
    /// Checks what clap cannot: relations between arguments.
    pub fn check(&self) -> Result<(), String> {
        let postgres = self
            .database_url
            .as_deref()
            .is_some_and(super::target::is_postgres);
        if self.schema.is_some() && !postgres {
            return Err("--schema names a PostgreSQL schema: give a postgres:// URL".to_owned());
        }
        if self.transaction_pooling && (!postgres || self.schema.is_some() || self.resume) {
            return Err(
                "--transaction-pooling needs a postgres:// URL (the proxy's), and runs \
                        in a fresh database: not with --schema or --resume"
                    .to_owned(),
            );
        }
        if self.resume && postgres && self.schema.is_none() {
            return Err(
                "--resume on PostgreSQL needs --schema: the schema of the run to finish".to_owned(),
            );
        }
        if self.crashing_runners > self.runners {
            return Err(format!(
                "--crashing-runners ({}) cannot exceed --runners ({})",
                self.crashing_runners, self.runners
            ));
        }
        if self.crashing_runners == self.runners && self.crash_rate > 0.0 {
            // Someone must be left to finish the work between crashes; crashers do come back,
            // so this is allowed, but say so when every runner crashes.
            eprintln!("note: every runner crashes now and then; recovery will carry the load");
        }
        Ok(())
    }

    /// Every task of the run.
    pub fn tasks(&self) -> u64 {
        u64::from(self.workflows) * u64::from(self.tasks_per_workflow)
    }
}
