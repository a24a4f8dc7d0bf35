//! The scale benchmark: the workload, checked, at growing sizes on each backend, fresh each run;
//! a markdown summary and an SVG plot. `cargo run --release -p dal-benches --bin scale -- --help`.

use std::time::Instant;
use std::{collections::BTreeMap, collections::BTreeSet, path::PathBuf, process::ExitCode};

use clap::Parser;
use dal_benches::baseline::Backend;
use dal_benches::workload::db::{Conn, Db, SERVER, Target, pg};
use dal_benches::workload::report::{OperationLatency, Report, bytes};
use dal_benches::workload::{args::Args, args::Job, execute, write_json};
use dal_core::History;
use dal_tests::counter::StatementCounter;
use diesel::{QueryableByName, RunQueryDsl, sql_types::Binary, sql_types::Text};
use serde::Serialize;
use uuid::Uuid;

/// The workload at each of `--sizes` on each of `--backends`, `--runs` times: medians of tasks/s,
/// claim latency, index entries read per claim, sizes. Exits with 1 when a check fails, 2 when a
/// run cannot be made.
#[derive(Debug, Parser)]
#[command(name = "scale", version)]
struct ScaleArgs {
    /// Task counts to run at (each sets the run's `--workflows`).
    #[arg(long, value_delimiter = ',', default_value = "20000,200000,2000000")]
    sizes: Vec<u64>,
    /// Backends to run on.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<Backend>,
    /// The PostgreSQL server and database (each run in a fresh schema there).
    #[arg(long, value_name = "URL", default_value = SERVER)]
    database_url: String,
    /// Runs at each size and backend; the summary shows their medians.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// The workload's arguments, for every run.
    #[command(flatten)]
    job: Job,
    /// Also write every run's report and the medians as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// The plot (default: `scale.svg` beside `--json`, or in the current directory).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

/// A run's figures by name; a relation's `bytes:NAME`, `live rows:`, `dead rows:`, `autovacuums:`.
type Figures = BTreeMap<String, f64>;

/// The runs at one size on one backend.
#[derive(Debug, Serialize)]
struct Point {
    backend: Backend,
    tasks: u64,
    median: Figures,
    runs: Vec<Report>,
}

/// A task the run left, and its workflow execution (their ids' 16 bytes).
#[derive(QueryableByName)]
struct Sampled {
    #[diesel(sql_type = Binary)]
    task: Vec<u8>,
    #[diesel(sql_type = Binary)]
    workflow: Vec<u8>,
}

/// The history reads timed after each run, each this many times, of tasks picked at random (by
/// `SAMPLE`, its `ID` a function giving a uuid's bytes) from those left.
const SAMPLES: usize = 500;
const SAMPLE: &str = "SELECT ID(id) AS task, ID(workflow_execution_id) AS workflow \
    FROM task_executions ORDER BY random() LIMIT 1000";

/// A PostgreSQL setting that moves the figures.
#[derive(QueryableByName, Serialize)]
struct Setting {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    value: String,
}

fn main() -> ExitCode {
    match scale(&ScaleArgs::parse()) {
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
    let per_workflow = u64::from(args.job.tasks_per_workflow);
    let mut plan = Vec::new();
    let pairs = args.backends.iter().flat_map(|&b| args.sizes.iter().map(move |&s| (b, s)));
    for (backend, tasks) in pairs {
        let workflows = u32::try_from(tasks / per_workflow).unwrap_or(0);
        if workflows == 0 || tasks % per_workflow != 0 {
            return Err(format!("--sizes: {tasks} is not whole workflow executions"));
        }
        let mut run = Args::parse_from(["workload"]);
        run.database_url = (backend == Backend::Postgres).then(|| args.database_url.clone());
        (run.job, run.quiet) = (Job { workflows, ..args.job.clone() }, args.quiet);
        plan.push((backend, tasks, run));
    }
    let postgres = args.backends.contains(&Backend::Postgres);
    let settings = if postgres { server_settings(&args.database_url)? } else { Vec::new() };
    print!("{}", header(args, &settings));
    let (mut points, mut passed) = (Vec::new(), true);
    for (backend, tasks, run) in plan {
        let mut runs = Vec::new();
        for n in 1..=args.runs {
            let report = measure(&run).map_err(|err| {
                print!("{}", summary(&points));
                format!("the run at {tasks} tasks on {backend:?} could not be made: {err}")
            })?;
            let (speed, verdict) =
                (report.tasks_per_second, ["FAILED", "passed"][report.passed as usize]);
            eprintln!("{backend:?}, {tasks} tasks, run {n}: {speed:.0} tasks/s, checks {verdict}");
            if !report.passed {
                passed = false;
                eprint!("{}", report.render());
            }
            runs.push(report);
        }
        let median = median(runs.iter().map(figures).collect());
        points.push(Point { backend, tasks, median, runs });
    }
    print!("{}", summary(&points));
    let beside = args.json.as_ref().map(|json| json.with_file_name("scale.svg"));
    let svg = args.svg.clone().or(beside).unwrap_or_else(|| "scale.svg".into());
    std::fs::write(&svg, plot(&points))
        .map_err(|e| format!("cannot write {}: {e}", svg.display()))?;
    let json = serde_json::json!({ "settings": settings, "points": points });
    args.json.as_ref().map_or(Ok(()), |path| write_json(path, &json)).map(|()| passed)
}

/// The run `run` describes, in a database made here so that once the run's timing is over, before
/// the database is dropped, its history is read back: `events_for_task` and `events_for_workflow`
/// (a first page of 1,000), [`SAMPLES`] times each.
fn measure(run: &Args) -> Result<Report, String> {
    let (target, mut run) = (Target::open(run)?, run.clone());
    match &target.db {
        Db::Sqlite(path) => run.database_url = Some(format!("sqlite://{}", path.display())),
        Db::Postgres(_, schema, _) => run.schema = Some(schema.clone()),
    }
    let mut report = execute(&run)?;
    let store = target.connect(1, History::Kept, &StatementCounter::new())?;
    let rows: Vec<Sampled> = match target.db.connect()? {
        Conn::Sqlite(mut c) => diesel::sql_query(SAMPLE.replace("ID", "")).load(&mut c),
        Conn::Pg(mut c) => diesel::sql_query(SAMPLE.replace("ID", "uuid_send")).load(&mut c),
    }
    .map_err(|e| format!("cannot sample the tasks left: {e}"))?;
    let (n, id) = (rows.len(), |bytes: &[u8]| Uuid::from_slice(bytes).unwrap_or_default());
    // Tasks from one end of the sample, workflows from the other: a workflow's events are not in
    // the cache from the read of its task's.
    let read = |workflow: bool, i: usize| {
        if workflow {
            store.events_for_workflow(id(&rows[n - 1 - i % n].workflow), None, 1000)
        } else {
            store.events_for_task(id(&rows[i % n].task))
        }
    };
    let reads = [(TASK_HISTORY, false), (WORKFLOW_HISTORY, true)];
    for (op, workflow) in reads.into_iter().filter(|_| n > 0) {
        let mut us = Vec::new();
        for i in 0..SAMPLES {
            let start = Instant::now();
            read(workflow, i).map_err(|e| format!("reading the history back failed: {e}"))?;
            us.push(start.elapsed().as_micros() as u64);
        }
        us.sort_unstable();
        let at = |q: f64| us[((SAMPLES - 1) as f64 * q).round() as usize];
        let [p50_us, p95_us, p99_us, max_us] = [0.5, 0.95, 0.99, 1.0].map(at);
        let latency = OperationLatency { calls: SAMPLES as u64, p50_us, p95_us, p99_us, max_us };
        report.operations.insert(op.to_string(), latency);
    }
    Ok(report)
}

/// The operations of a report that are the history reads after the run.
const TASK_HISTORY: &str = "events_for_task after the run";
const WORKFLOW_HISTORY: &str = "events_for_workflow after the run";

/// The settings of the server at `url` that move the figures, as `SHOW` prints them.
fn server_settings(url: &str) -> Result<Vec<Setting>, String> {
    let mut conn = pg(url).map_err(|e| format!("{e} (or leave it out: --backends sqlite)"))?;
    diesel::sql_query(
        "SELECT name, current_setting(name) AS value FROM unnest(ARRAY['server_version', \
         'autovacuum', 'autovacuum_naptime', 'shared_buffers', 'max_wal_size', \
         'synchronous_commit', 'plan_cache_mode']) AS name",
    )
    .load(&mut conn)
    .map_err(|e| format!("cannot read the server's settings: {e}"))
}

/// What the summary shows of a run.
fn figures(report: &Report) -> Figures {
    let mut f = Figures::from([
        ("tasks/s".into(), report.tasks_per_second),
        ("µs per task".into(), 1e6 / report.tasks_per_second),
    ]);
    let timed =
        [("finish_and_claim", "claim"), (TASK_HISTORY, "task"), (WORKFLOW_HISTORY, "workflow")];
    for (op, name) in timed {
        if let Some(l) = report.operations.get(op) {
            f.insert(format!("{name} p50 µs"), l.p50_us as f64);
            f.insert(format!("{name} p99 µs"), l.p99_us as f64);
        }
    }
    for r in report.footprint.iter().flatten() {
        let (size, vacuums) = (Some(r.bytes), r.autovacuums);
        let counters = [("bytes", size), ("live rows", r.live_rows), ("dead rows", r.dead_rows)];
        for (name, value) in counters.into_iter().chain([("autovacuums", vacuums)]) {
            if let Some(value) = value {
                f.insert(format!("{name}:{}", r.name), value as f64);
            }
        }
        if r.table == "task_executions"
            && let Some(reads) = r.read_per_claim
        {
            *f.entry("index entries/claim".into()).or_default() += reads;
        }
    }
    f
}

/// The median of each figure over `runs` (the mean of the middle two for an even count).
fn median(runs: Vec<Figures>) -> Figures {
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (name, value) in runs.into_iter().flatten() {
        values.entry(name).or_default().push(value);
    }
    let middle = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
    };
    values.into_iter().map(|(k, v)| (k, middle(v))).collect()
}

/// What was run, and where.
fn header(args: &ScaleArgs, settings: &[Setting]) -> String {
    let sizes: Vec<String> = args.sizes.iter().map(|s| group(*s as f64, 0)).collect();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let Job { runners, crashing_runners, batch, prune_every_ms, retain_ms, seed, .. } = &args.job;
    let rows = settings.iter().map(|s| vec![format!("`{}`", s.name), s.value.clone()]);
    let settings = markdown(&["PostgreSQL setting".into(), "value".into()], rows.collect());
    format!(
        "## Scale: the workload at {} tasks\n\n{runners} runners ({crashing_runners} crashing), \
         claims of {batch}, a retention pass every {prune_every_ms} ms keeping {retain_ms} ms; \
         seed {seed}; {} run(s) each; {cores} cores.\n\n{settings}",
        sizes.join(", "),
        args.runs
    )
}

/// The columns of the main table: (figure, decimals); `×`: against the smallest size. `task`,
/// `workflow`: their history read back after the run.
#[rustfmt::skip]
const COLUMNS: [(&str, usize); 15] = [("tasks/s", 0), ("× tasks/s", 2), ("µs per task", 1),
    ("claim p50 µs", 0), ("claim p99 µs", 0), ("× claim p99 µs", 2), ("index entries/claim", 1),
    ("task p50 µs", 0), ("× task p50 µs", 2), ("task p99 µs", 0), ("× task p99 µs", 2),
    ("workflow p50 µs", 0), ("× workflow p50 µs", 2), ("workflow p99 µs", 0),
    ("× workflow p99 µs", 2)];

/// The medians per backend and size (`×`: against the smallest), then each relation's figures.
fn summary(points: &[Point]) -> String {
    let mut headings = vec!["backend".to_owned(), "tasks".into()];
    headings.extend(COLUMNS.iter().map(|(name, _)| name.to_string()));
    let mut rows = Vec::new();
    for point in points {
        let same = points.iter().filter(|p| p.backend == point.backend);
        let smallest = same.min_by_key(|p| p.tasks).map(|p| &p.median);
        let mut cells = vec![format!("{:?}", point.backend), group(point.tasks as f64, 0)];
        for (name, decimals) in COLUMNS {
            let figure = name.trim_start_matches("× ");
            let base =
                if figure == name { Some(&1.0) } else { smallest.and_then(|b| b.get(figure)) };
            let value = point.median.get(figure).zip(base).map(|(v, b)| v / b);
            cells.push(value.map_or("–".into(), |v| group(v, decimals)));
        }
        rows.push(cells);
    }
    let mut out = format!("\n{}", markdown(&headings, rows));
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let mine: Vec<&Point> = points.iter().filter(|p| p.backend == backend).collect();
        let mut names: Vec<&String> = mine.iter().flat_map(|p| p.median.keys()).collect();
        names.retain(|k| k.contains(':'));
        // Sizes first; each table before its indexes.
        names.sort_by_key(|k| {
            let (what, name) = k.split_once(':').unwrap_or_default();
            let index = !["database file", "task_executions", "execution_events"].contains(&name);
            let events = name.contains("execution_events");
            (what != "bytes", events, index, name, *k)
        });
        names.dedup();
        let mut headings = vec![format!("{backend:?} at the end")];
        headings.extend(mine.iter().map(|p| group(p.tasks as f64, 0)));
        let rows = names.iter().map(|name| {
            let (what, relation) = name.split_once(':').unwrap_or_default();
            let values = mine.iter().map(|p| p.median.get(*name));
            let show = |v: &f64| {
                if what == "bytes" { bytes(*v as i64) } else { group(*v, 0) }
            };
            let cells = values.map(|v| v.map_or("–".into(), show));
            std::iter::once(format!("`{relation}` {what}")).chain(cells).collect()
        });
        out += &format!("\n{}", markdown(&headings, rows.collect()));
    }
    out
}

/// `v` with `decimals` decimals, the whole part grouped by thousands.
fn group(v: f64, decimals: usize) -> String {
    let text = format!("{v:.decimals$}");
    let (whole, fraction) = text.split_at(text.find('.').unwrap_or(text.len()));
    let digits = whole.trim_start_matches('-');
    let comma = |i: usize| (i > 0 && (digits.len() - i).is_multiple_of(3)).then_some(',');
    let grouped: String =
        digits.chars().enumerate().flat_map(|(i, c)| comma(i).into_iter().chain([c])).collect();
    format!("{}{grouped}{fraction}", &whole[..whole.len() - digits.len()])
}

/// A markdown table, its columns of numbers (all but the first) right-aligned.
fn markdown(headings: &[String], rows: Vec<Vec<String>>) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let body: String = rows.iter().map(|row| format!("\n| {} |", row.join(" | "))).collect();
    format!("| {} |\n|---|{}{body}\n", headings.join(" | "), "---:|".repeat(headings.len() - 1))
}

/// µs per task and the claim's p99 against tasks (logarithmic), one line per backend.
fn plot(points: &[Point]) -> String {
    let (width, height, margin) = (440.0, 300.0, 60.0);
    let sizes: BTreeSet<u64> = points.iter().map(|p| p.tasks).collect();
    let log = |tasks: u64| (tasks.max(1) as f64).log10();
    let (low, high) =
        (sizes.first().map_or(0.0, |t| log(*t)), sizes.last().map_or(1.0, |t| log(*t)));
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
"#,
        2.0 * width
    );
    for (panel, figure) in ["µs per task", "claim p99 µs"].into_iter().enumerate() {
        let left = panel as f64 * width + margin;
        let (right, bottom) = (left + width - 1.5 * margin, height - margin);
        let values = points.iter().filter_map(|p| p.median.get(figure));
        let top = values.fold(1e-9, |a: f64, b| a.max(*b)) * 1.1;
        let x = |tasks| left + (log(tasks) - low) / (high - low).max(1e-9) * (right - left);
        let y = |v: f64| bottom - v / top * (bottom - 30.0);
        svg += &text((left + right) / 2.0, 18.0, "middle", &format!("{figure} against tasks"));
        svg += &format!(r#"<path d="M{left} 30 V{bottom} H{right}" stroke="black" fill="none"/>"#);
        svg.push('\n');
        for tick in [0.0, 0.25, 0.5, 0.75, 1.0].map(|t| t * top) {
            let label = group(tick, usize::from(top < 100.0));
            svg += &text(left - 5.0, y(tick) + 4.0, "end", &label);
        }
        for &tasks in &sizes {
            svg += &text(x(tasks), bottom + 16.0, "middle", &group(tasks as f64, 0));
        }
        let backends = [(Backend::Sqlite, "#1f77b4"), (Backend::Postgres, "#d62728")];
        for (i, (backend, colour)) in backends.into_iter().enumerate() {
            let mine = points.iter().filter(|p| p.backend == backend);
            let line: Vec<(f64, f64)> =
                mine.filter_map(|p| Some((x(p.tasks), y(*p.median.get(figure)?)))).collect();
            if line.is_empty() {
                continue;
            }
            let path: Vec<String> = line.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            svg += &format!(r#"<g fill="{colour}" stroke="{colour}" stroke-width="2">"#);
            svg += &format!(r#"<polyline points="{}" fill="none"/>"#, path.join(" "));
            for (x, y) in &line {
                svg += &format!(r#"<circle cx="{x:.1}" cy="{y:.1}" r="3"/>"#);
            }
            svg += &text(left + 80.0 * i as f64, height - 12.0, "start", &format!("{backend:?}"));
            svg += "</g>\n";
        }
    }
    svg + "</svg>\n"
}

/// An SVG text element.
fn text(x: f64, y: f64, anchor: &str, body: &str) -> String {
    format!(r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" stroke="none">{body}</text>"#)
        + "\n"
}
