//! The workload runner: the main job of the project.

pub mod args;
pub mod checks;
pub mod footprint;
pub mod ledger;
pub mod metrics;
pub mod report;
pub mod run;
pub mod scale;
pub mod target;

use std::process::ExitCode;

use args::Args;
use dal_tests::counter::StatementCounter;
use report::Report;
use target::Target;

/// Runs the workload `args` describe, prints the report, writes it as JSON when asked, and
/// returns the exit code: 0 when every check passed, 1 when one failed, 2 when the run could
/// not be made.
pub fn main_with(args: Args) -> ExitCode {
    let report = match execute(&args) {
        Ok(report) => report,
        Err(message) => {
            eprintln!("workload: {message}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.render());
    if let Some(path) = &args.json
        && let Err(err) = write_json(path, &report)
    {
        eprintln!("workload: {err}");
        return ExitCode::from(2);
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<(), String> {
    serde_json::to_string_pretty(value)
        .map_err(|e| e.to_string())
        .and_then(|json| std::fs::write(path, json).map_err(|e| e.to_string()))
        .map_err(|err| format!("cannot write {}: {err}", path.display()))
}

/// Runs the workload `args` describe in a database of its own (removed afterwards unless
/// `--keep`) and returns its report, checks included. An error is a run that could not be
/// made: bad arguments, no database, a thread or the reading back stopped by an error.
pub fn execute(args: &Args) -> Result<Report, String> {
    args.check()?;
    let target = Target::open(args)?;
    let report = execute_in(&target, args);
    if let Err(err) = target.close() {
        eprintln!("workload: cleaning up failed: {err}");
    }
    report
}

fn execute_in(target: &Target, args: &Args) -> Result<Report, String> {
    // Tasks already there (a `sqlite://` file used before), read through a store whose
    // statements are not counted.
    let preexisting = target
        .connect(&StatementCounter::new())?
        .count_by_status()
        .map_err(|err| format!("cannot count the tasks in {}: {err}", target.location))?
        .total();
    if preexisting > 0 && args.retention.enabled() {
        return Err(format!(
            "{} already holds {preexisting} tasks, and retention would remove those that are \
             finished: use a new database, or --prune-every-ms 0",
            target.location
        ));
    }
    let counter = StatementCounter::new();
    let store = target.connect(&counter)?;
    let start = footprint::index_counters(&target.database).unwrap_or_else(|err| {
        eprintln!("workload: {err}; index entries per claim left out");
        None
    });
    // The run drops the store: its connections are closed before the footprint is read.
    let finished = run::run(store, args);
    let (statements, prepares, transactions) = counter.totals();
    if let Some(error) = &finished.error {
        return Err(format!("the run stopped: {error}"));
    }
    let operations = finished.latencies.summary();
    let claims = operations.get("claim_ready").map_or(0, |l| l.calls);
    let footprint = footprint::read(&target.database, start.as_ref(), claims)
        .map_err(|err| eprintln!("workload: reading the footprint failed: {err}"))
        .ok();
    // The checks read through a store of their own, not counted.
    let store = target.connect(&StatementCounter::new())?;
    let checks = checks::run_checks(
        &*store,
        &finished.ledger,
        &finished.outcomes,
        u64::try_from(preexisting).unwrap_or_default(),
    )
    .map_err(|err| format!("reading the results back failed: {err}"))?;
    let tasks = args.tasks();
    let elapsed_s = finished.elapsed.as_secs_f64();
    Ok(Report {
        backend: target.backend,
        location: target.location.clone(),
        workflows: args.workflows,
        tasks,
        runners: args.runners,
        crashing_runners: args.crashing_runners,
        batch: args.batch,
        work_us: args.work_us,
        fail_rate: args.fail_rate,
        crash_rate: args.crash_rate,
        retention: args.retention.clone(),
        elapsed_s,
        tasks_per_second: tasks as f64 / elapsed_s,
        statements,
        statements_per_task: statements as f64 / tasks as f64,
        prepares,
        transactions,
        operations,
        outcomes: finished.outcomes.snapshot(),
        passed: checks.iter().all(|c| c.passed),
        checks,
        footprint,
    })
}
