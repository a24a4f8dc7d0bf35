//! The command line: where to run ([`Args`]) and what ([`Job`], recorded for `--resume`).

use std::path::PathBuf;

use clap::Parser;
use serde::{Deserialize, Serialize};

/// Runners working through workflows on one store (crashes, retries, a sweeper, a pruner), checked.
/// Exits with 1 when a check fails, 2 when the run cannot be made.
#[derive(Debug, Clone, Parser)]
#[command(name = "workload", version)]
pub struct Args {
    /// `postgres://...`, `host=... user=...` (a fresh schema), `sqlite://PATH` (default: temporary)
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// PostgreSQL: work in this schema (created if missing, never dropped).
    #[arg(long, value_name = "NAME", value_parser = schema_name)]
    pub schema: Option<String>,
    /// PostgreSQL: the URL is a transaction pooler's; the run works in a database of its own.
    #[arg(long)]
    pub transaction_pooling: bool,
    /// Finish the run recorded in the database (`sqlite://PATH`, or `--schema`) whose process died.
    #[arg(long, requires = "database_url", conflicts_with = "Job")]
    pub resume: bool,
    /// What the run does.
    #[command(flatten)]
    pub job: Job,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Keep the database (the SQLite file, the PostgreSQL schema) after the run.
    #[arg(long)]
    pub keep: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// What a run does.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct Job {
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
    /// Pause between two creation batches (ms).
    #[arg(long, default_value_t = 0)]
    pub create_pause_ms: u64,
    /// Simulated work per task (µs).
    #[arg(long, default_value_t = 0)]
    pub work_us: u64,
    /// After a claim that found nothing: `wake`, wait for work (`wait_for_work`, 100 ms at
    /// most); `poll`, sleep 1 ms.
    /// (A run recorded before the flag resumes with `wake`.)
    #[arg(long, default_value = "wake", value_parser = ["wake", "poll"])]
    #[serde(default = "wake")]
    pub wait: String,
    /// Whether the store writes the execution history (`off`: only the rows are checked).
    #[arg(long, default_value = "kept", value_parser = ["kept", "off"])]
    pub history: String,
    /// Share of task executions that fail (retried while attempts are left).
    #[arg(long, default_value_t = 0.05, value_parser = share)]
    pub fail_rate: f64,
    /// Attempts each task may make.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=1_000))]
    pub max_attempts: i32,
    /// Runners that crash now and then, leaving their claims, and come back under a new id.
    #[arg(long, default_value_t = 1)]
    pub crashing_runners: u32,
    /// Chance that a crashing runner crashes during a batch.
    #[arg(long, default_value_t = 0.05, value_parser = share)]
    pub crash_rate: f64,
    /// A claim whose heartbeat is older than this is stale (ms).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=YEAR_MS))]
    pub stale_after_ms: u64,
    /// How often the sweeper recovers stale claims (ms).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    pub sweep_every_ms: u64,
    /// Recoveries after which a stale task is abandoned.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(0..))]
    pub max_recoveries: i32,
    /// How often the pruner runs a retention pass (ms; 0: no pruning).
    #[arg(long, default_value_t = 500)]
    pub prune_every_ms: u64,
    /// Finished tasks each `prune_finished` batch scans (at most 10,000).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub prune_batch: u32,
    /// Workflow executions finished more recently than this are kept (ms, up to a year).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=YEAR_MS))]
    pub retain_ms: u64,
    /// Connections in the store's pool (default: runners + 2).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pool_size: Option<u32>,
    /// Seed of the simulated failures and crashes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

const YEAR_MS: u64 = 366 * 24 * 3_600 * 1_000;

impl Job {
    /// Every task of the run.
    pub fn tasks(&self) -> u64 {
        u64::from(self.workflows) * u64::from(self.tasks_per_workflow)
    }

    /// The store's history setting.
    pub fn history(&self) -> dal_core::History {
        if self.history == "off" { dal_core::History::Off } else { dal_core::History::Kept }
    }
}

/// A schema name that needs no quoting: letters, digits and `_`, not starting with a digit.
fn schema_name(text: &str) -> Result<String, String> {
    let plain = text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match text.chars().next() {
        Some(first) if plain && !first.is_ascii_digit() && text.len() <= 63 => Ok(text.to_owned()),
        _ => Err(format!("{text:?} is not a plain schema name")),
    }
}

/// A number from 0 to 1.
fn share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("{text:?} is not a number from 0 to 1")),
    }
}

fn wake() -> String {
    "wake".into()
}
