//! The scale benchmark: the workload at growing task counts, on each backend, one run after
//! another in this process, each in a fresh database (a new SQLite file, a new PostgreSQL
//! schema); then a markdown summary of how throughput, claim latency, index reads and sizes
//! grow with the store. `cargo run --release -p dal-benches --bin scale -- --help`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use diesel::sql_types::Text;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use serde::Serialize;

use super::args::{Args, Retention, RunnerCycle};
use super::footprint::{Footprint, relation_order};
use super::report::{Report, bytes};
use super::target::redact;

/// The PostgreSQL settings printed with the results: those that move the figures.
const SETTINGS: [&str; 7] = [
    "server_version",
    "autovacuum",
    "autovacuum_naptime",
    "shared_buffers",
    "max_wal_size",
    "synchronous_commit",
    "plan_cache_mode",
];

/// Runs the workload at each of `--sizes` tasks on each of `--backends`, `--runs` times each,
/// and prints a markdown summary: tasks/s, the claim's (`finish_and_claim` or `claim_ready`) and
/// `complete_many`'s latencies, index
/// entries read per claim (PostgreSQL), table and index sizes, and each size against the
/// smallest. Exits with 1 when a run's check fails, 2 when a run cannot be made.
#[derive(Debug, Clone, Parser)]
#[command(name = "scale", version)]
pub struct ScaleArgs {
    /// Task counts to run at (multiples of the workload's 10 tasks per workflow execution).
    #[arg(long, value_delimiter = ',', default_value = "20000,200000,2000000")]
    pub sizes: Vec<u64>,

    /// Backends to run on.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    pub backends: Vec<BackendName>,

    /// The PostgreSQL server and database (each run works in a fresh schema there).
    #[arg(
        long,
        value_name = "URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub database_url: String,

    /// Runs at each size and backend; the summary shows each and their median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,

    /// Seed of the simulated failures and crashes (default: the workload's).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Runner threads (default: the workload's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub runners: Option<u32>,

    /// Of which crash now and then (default: the workload's).
    #[arg(long)]
    pub crashing_runners: Option<u32>,

    /// The workload's `--cycle`: how runners finish a batch and claim the next.
    #[arg(long, value_enum, default_value_t = RunnerCycle::OneStatement)]
    pub cycle: RunnerCycle,

    /// Retention, as in the workload.
    #[command(flatten)]
    pub retention: Retention,

    /// Also write every run's report and the medians as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// A backend to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    /// An embedded SQLite file in a temporary directory.
    Sqlite,
    /// A fresh schema on `--database-url`.
    Postgres,
}

/// One run of the workload.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRun {
    /// 1-based, within its size and backend.
    pub run: u32,
    /// Its figures, keyed as the summary's columns ([`figures`]).
    pub figures: Figures,
    /// Its whole report.
    pub report: Report,
}

/// The runs at one size on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct ScalePoint {
    /// `sqlite` or `postgres`.
    pub backend: BackendName,
    /// Tasks.
    pub tasks: u64,
    /// Each run.
    pub runs: Vec<ScaleRun>,
    /// The median of each figure over the runs.
    pub median: Figures,
}

/// What the summary shows of a run, by name (see [`figures`]).
pub type Figures = BTreeMap<String, f64>;

/// What `--json` writes.
#[derive(Debug, Serialize)]
struct ScaleReport<'a> {
    settings: &'a [(String, String)],
    points: &'a [ScalePoint],
}

#[derive(Debug, QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

/// The settings of the server at `url` that matter to the figures, as `SHOW` prints them.
pub fn server_settings(url: &str) -> Result<Vec<(String, String)>, String> {
    let mut conn = PgConnection::establish(url).map_err(|e| {
        format!(
            "cannot connect to PostgreSQL at {}: {}\n(start it, pass --database-url, or leave \
             it out with --backends sqlite)",
            redact(url),
            e.to_string().trim_end()
        )
    })?;
    SETTINGS
        .iter()
        .map(|name| {
            diesel::sql_query("SELECT current_setting($1) AS value")
                .bind::<Text, _>(*name)
                .get_result::<Setting>(&mut conn)
                .map(|s| ((*name).to_owned(), s.value))
                .map_err(|e| format!("cannot read the setting {name}: {e}"))
        })
        .collect()
}

impl ScaleArgs {
    /// The workload's arguments for a run of `tasks` tasks on `backend`: the workload's
    /// defaults, with what these arguments set.
    pub fn workload_args(&self, backend: BackendName, tasks: u64) -> Result<Args, String> {
        let mut args = Args::try_parse_from(["workload"]).map_err(|e| e.to_string())?;
        let per_workflow = u64::from(args.tasks_per_workflow);
        args.workflows = u32::try_from(tasks / per_workflow)
            .ok()
            .filter(|w| *w > 0 && tasks.is_multiple_of(per_workflow))
            .ok_or_else(|| {
                format!("--sizes: {tasks} is not a positive multiple of {per_workflow} tasks")
            })?;
        args.database_url = match backend {
            BackendName::Sqlite => None,
            BackendName::Postgres => Some(self.database_url.clone()),
        };
        args.seed = self.seed.unwrap_or(args.seed);
        args.runners = self.runners.unwrap_or(args.runners);
        args.crashing_runners = self.crashing_runners.unwrap_or(args.crashing_runners);
        args.cycle = self.cycle;
        args.retention = self.retention.clone();
        args.quiet = self.quiet;
        args.check()?;
        Ok(args)
    }
}

/// Runs the scale benchmark `args` describe, prints the summary, and returns the exit code.
pub fn main_with(args: ScaleArgs) -> ExitCode {
    match scale(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("scale: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs every size on every backend; true when every check of every run passed.
fn scale(args: &ScaleArgs) -> Result<bool, String> {
    // Every run's arguments first: a bad size fails before anything runs.
    let mut plan = Vec::new();
    for &backend in &args.backends {
        for &tasks in &args.sizes {
            plan.push((backend, tasks, args.workload_args(backend, tasks)?));
        }
    }
    let settings = if args.backends.contains(&BackendName::Postgres) {
        server_settings(&args.database_url)?
    } else {
        Vec::new()
    };
    if let Some((_, _, first)) = plan.first() {
        print!("{}", header(args, first, &settings));
    }
    let mut points = Vec::new();
    let mut passed = true;
    for (backend, tasks, workload) in plan {
        let mut runs = Vec::new();
        for run in 1..=args.runs {
            let report = super::execute(&workload).map_err(|err| {
                // What was measured so far is still worth having.
                print!("{}", summary(&points));
                format!("the run at {tasks} tasks on {backend:?} could not be made: {err}")
            })?;
            let figures = figures(&report);
            eprintln!("{}", run_line(&report, run, args.runs, &figures));
            if !report.passed {
                passed = false;
                eprint!("{}", report.render());
            }
            runs.push(ScaleRun {
                run,
                figures,
                report,
            });
        }
        let median = median(runs.iter().map(|r| &r.figures));
        points.push(ScalePoint {
            backend,
            tasks,
            runs,
            median,
        });
    }
    print!("{}", summary(&points));
    if let Some(path) = &args.json {
        super::write_json(
            path,
            &ScaleReport {
                settings: &settings,
                points: &points,
            },
        )?;
    }
    Ok(passed)
}

/// The columns of the summary, in order: (figure, heading, decimals).
const COLUMNS: [(&str, &str, usize); 9] = [
    ("tasks_per_second", "tasks/s", 0),
    ("tasks_per_second_ratio", "× tasks/s", 2),
    ("claim_p50_us", "claim p50 µs", 0),
    ("claim_p99_us", "claim p99 µs", 0),
    ("claim_p99_ratio", "× claim p99", 2),
    ("complete_many_p50_us", "complete_many p50 µs", 0),
    ("complete_many_p99_us", "complete_many p99 µs", 0),
    ("due_index_entries_per_claim", "due-index entries/claim", 1),
    (
        "index_entries_per_claim",
        "all task indexes entries/claim",
        1,
    ),
];

/// A run's figures: throughput, latencies, index reads, and each relation's bytes
/// (`bytes:<name>`), the SQLite file (`bytes:database file`) and PostgreSQL's table counters
/// (`dead_tuples:<table>`, `autovacuums:<table>`).
pub fn figures(report: &Report) -> Figures {
    let mut figures = Figures::new();
    figures.insert("tasks_per_second".into(), report.tasks_per_second);
    // The call that claims: the runner cycle, or `claim_ready` in the two-statement cycle.
    let claim = ["finish_and_claim", "claim_ready"]
        .iter()
        .find_map(|op| report.operations.get(*op).filter(|l| l.calls > 0));
    for (name, latency) in [
        ("claim", claim),
        ("complete_many", report.operations.get("complete_many")),
    ] {
        if let Some(l) = latency.filter(|l| l.calls > 0) {
            figures.insert(format!("{name}_p50_us"), l.p50_us as f64);
            figures.insert(format!("{name}_p99_us"), l.p99_us as f64);
        }
    }
    let Some(footprint) = &report.footprint else {
        return figures;
    };
    let Footprint {
        relations,
        tables,
        file,
        index_reads,
    } = footprint;
    if let Some(reads) = index_reads {
        figures.insert(
            "due_index_entries_per_claim".into(),
            reads.due_index_per_claim,
        );
        figures.insert(
            "index_entries_per_claim".into(),
            reads.all_indexes_per_claim,
        );
    }
    for relation in relations {
        figures.insert(format!("bytes:{}", relation.name), relation.bytes as f64);
    }
    if let Some(file) = file {
        figures.insert("bytes:database file".into(), file.bytes as f64);
        figures.insert("bytes:free pages".into(), file.free_bytes as f64);
    }
    for table in tables {
        figures.insert(
            format!("live_tuples:{}", table.table),
            table.live_tuples as f64,
        );
        figures.insert(
            format!("dead_tuples:{}", table.table),
            table.dead_tuples as f64,
        );
        figures.insert(
            format!("autovacuums:{}", table.table),
            table.autovacuums as f64,
        );
    }
    figures
}

/// The median of each figure over `runs` (the mean of the middle two for an even count).
pub fn median<'a>(runs: impl Iterator<Item = &'a Figures>) -> Figures {
    let mut values: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for figures in runs {
        for (name, value) in figures {
            values.entry(name).or_default().push(*value);
        }
    }
    values
        .into_iter()
        .map(|(name, mut v)| {
            v.sort_by(f64::total_cmp);
            let mid = v.len() / 2;
            let median = if v.len() % 2 == 0 {
                (v[mid - 1] + v[mid]) / 2.0
            } else {
                v[mid]
            };
            (name.to_owned(), median)
        })
        .collect()
}

/// What was run, and where: the workload's settings and the server's.
fn header(args: &ScaleArgs, w: &Args, settings: &[(String, String)]) -> String {
    let mut out = String::new();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let _ = writeln!(
        out,
        "## Scale: the workload at {} tasks\n",
        list(&args.sizes)
    );
    {
        let retention = if w.retention.enabled() {
            format!(
                "a retention pass every {} ms (batches of {}, keeping {} ms)",
                w.retention.prune_every_ms, w.retention.prune_batch, w.retention.retain_ms
            )
        } else {
            "no retention".to_owned()
        };
        let _ = writeln!(
            out,
            "{} tasks per workflow execution, {} runners ({} crashing), claims of {}, {}% failing, \
             {retention}; seed {}; {} run(s) each; {cores} cores.\n",
            w.tasks_per_workflow,
            w.runners,
            w.crashing_runners,
            w.batch,
            w.fail_rate * 100.0,
            w.seed,
            args.runs
        );
    }
    if !settings.is_empty() {
        let rows = settings
            .iter()
            .map(|(name, value)| vec![format!("`{name}`"), value.clone()])
            .collect();
        out.push_str(&markdown(&["PostgreSQL setting", "value"], rows));
        out.push('\n');
    }
    out
}

fn run_line(report: &Report, run: u32, runs: u32, figures: &Figures) -> String {
    let get = |name: &str| {
        figures
            .get(name)
            .map_or("–".to_owned(), |v| format!("{v:.0}"))
    };
    let reads = figures
        .get("due_index_entries_per_claim")
        .map(|v| format!(", {v:.1} due-index entries per claim"))
        .unwrap_or_default();
    format!(
        "{} {} tasks, run {run}/{runs}: {} tasks/s, claim p50 {} µs p99 {} µs, \
         complete_many p50 {} µs p99 {} µs{reads}, checks {} ({:.1} s)",
        report.backend,
        report.tasks,
        get("tasks_per_second"),
        get("claim_p50_us"),
        get("claim_p99_us"),
        get("complete_many_p50_us"),
        get("complete_many_p99_us"),
        if report.passed { "passed" } else { "FAILED" },
        report.elapsed_s
    )
}

/// The summary: throughput and latency per backend, size and run, with the ratios against
/// the smallest size; then the sizes of the tables and indexes; then PostgreSQL's table
/// counters.
pub fn summary(points: &[ScalePoint]) -> String {
    let mut out = String::new();
    let mut headings = vec!["backend", "tasks", "run"];
    headings.extend(COLUMNS.iter().map(|(_, heading, _)| *heading));
    let mut rows = Vec::new();
    for point in points {
        let smallest = points
            .iter()
            .filter(|p| p.backend == point.backend)
            .min_by_key(|p| p.tasks)
            .map(|p| &p.median);
        let mut row = |label: String, figures: &Figures| {
            let mut figures = figures.clone();
            if let Some(base) = smallest {
                for (figure, ratio) in [
                    ("tasks_per_second", "tasks_per_second_ratio"),
                    ("claim_p99_us", "claim_p99_ratio"),
                ] {
                    if let (Some(v), Some(b)) = (figures.get(figure), base.get(figure)) {
                        let r = v / b;
                        figures.insert(ratio.to_owned(), r);
                    }
                }
            }
            let mut cells = vec![backend_name(point.backend), group(point.tasks), label];
            cells.extend(COLUMNS.iter().map(|(name, _, decimals)| {
                figures
                    .get(*name)
                    .map_or("–".to_owned(), |v| number(*v, *decimals))
            }));
            rows.push(cells);
        };
        if point.runs.len() > 1 {
            for run in &point.runs {
                row(run.run.to_string(), &run.figures);
            }
            row("median".to_owned(), &point.median);
        } else {
            row("1".to_owned(), &point.median);
        }
    }
    out.push_str(&markdown(&headings, rows));
    out.push('\n');

    for backend in [BackendName::Sqlite, BackendName::Postgres] {
        let mine: Vec<&ScalePoint> = points.iter().filter(|p| p.backend == backend).collect();
        let sizes: Vec<String> = mine.iter().map(|p| group(p.tasks)).collect();
        let mut headings = vec![""];
        headings.extend(sizes.iter().map(String::as_str));
        // Sizes, then (PostgreSQL) the tables' counters, each a row across the sizes.
        let heading = format!("{} sizes", backend_name(backend));
        headings[0] = &heading;
        let rows = rows_across(&mine, &["bytes:"], |v| bytes(v as i64));
        if !rows.is_empty() {
            out.push_str(&markdown(&headings, rows));
            out.push('\n');
        }
        let heading = format!("{} tables at the end", backend_name(backend));
        headings[0] = &heading;
        let rows = rows_across(
            &mine,
            &["live_tuples:", "dead_tuples:", "autovacuums:"],
            |v| number(v, 0),
        );
        if !rows.is_empty() {
            out.push_str(&markdown(&headings, rows));
            out.push('\n');
        }
    }
    out
}

/// One row per figure named `<prefix><relation>`, for each prefix, relations in
/// [`relation_order`]; one cell per point (its median), formatted by `format`.
fn rows_across(
    points: &[&ScalePoint],
    prefixes: &[&str],
    format: impl Fn(f64) -> String,
) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for prefix in prefixes {
        let mut names: Vec<&str> = points
            .iter()
            .flat_map(|p| p.median.keys().filter_map(|k| k.strip_prefix(prefix)))
            .collect();
        names.sort_by_key(|name| relation_order(name));
        names.dedup();
        let what = prefix.trim_end_matches(':').replace('_', " ");
        for name in names {
            let label = if *prefix == "bytes:" {
                format!("`{name}`")
            } else {
                format!("`{name}` {what}")
            };
            let mut cells = vec![label];
            cells.extend(points.iter().map(|p| {
                p.median
                    .get(&format!("{prefix}{name}"))
                    .map_or("–".to_owned(), |v| format(*v))
            }));
            rows.push(cells);
        }
    }
    rows
}

fn backend_name(backend: BackendName) -> String {
    match backend {
        BackendName::Sqlite => "SQLite".to_owned(),
        BackendName::Postgres => "PostgreSQL".to_owned(),
    }
}

/// `n` with thousands separators.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `v` with `decimals` decimals, the integer part grouped by thousands.
fn number(v: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, v.abs());
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let sign = if v < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        "-"
    } else {
        ""
    };
    let whole = group(whole.parse().unwrap_or_default());
    if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    }
}

fn list(sizes: &[u64]) -> String {
    sizes
        .iter()
        .map(|s| group(*s))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A markdown table; a column of numbers is right-aligned.
fn markdown(headings: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut out = format!("| {} |\n|", headings.join(" | "));
    for i in 0..headings.len() {
        let numbers = rows.iter().all(|row| {
            row.get(i)
                .and_then(|cell| cell.chars().next())
                .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '–')
        });
        out.push_str(if numbers { "---:|" } else { "---|" });
    }
    out.push('\n');
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_each_figure() {
        let runs: Vec<Figures> = [3.0, 1.0, 2.0, 10.0]
            .iter()
            .map(|v| Figures::from([("a".to_owned(), *v)]))
            .collect();
        assert_eq!(median(runs.iter()).get("a"), Some(&2.5));
        assert_eq!(median(runs[..3].iter()).get("a"), Some(&2.0));
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(2_000_000), "2,000,000");
        assert_eq!(group(200), "200");
        assert_eq!(number(12_345.678, 1), "12,345.7");
        assert_eq!(number(0.25, 2), "0.25");
    }

    #[test]
    fn sizes_must_be_whole_workflow_executions() {
        let args = ScaleArgs::parse_from(["scale", "--runners", "2"]);
        let workload = args.workload_args(BackendName::Postgres, 20_000);
        assert_eq!(workload.as_ref().map(|w| w.workflows).ok(), Some(2_000));
        assert_eq!(workload.map(|w| w.runners).ok(), Some(2));
        assert!(args.workload_args(BackendName::Sqlite, 15).is_err());
        assert!(args.workload_args(BackendName::Sqlite, 0).is_err());
    }
}
