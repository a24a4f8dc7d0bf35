//! The workload runner: the main job of the project.

pub mod args;
pub mod checks;
pub mod metrics;
pub mod report;
pub mod run;
pub mod target;

use std::process::ExitCode;

use args::Args;
use report::Report;
use target::Target;

/// Runs the workload `args` describe, prints the report, writes it as JSON when asked, and
/// returns the exit code: 0 when every check passed, 1 when one failed, 2 when the run could
/// not be made.
pub fn main_with(args: Args) -> ExitCode {
    if let Err(message) = args.check() {
        eprintln!("workload: {message}");
        return ExitCode::from(2);
    }
    let target = match Target::open(&args) {
        Ok(target) => target,
        Err(message) => {
            eprintln!("workload: {message}");
            return ExitCode::from(2);
        }
    };
    let finished = run::run(target.store.clone(), &args);
    let (statements, prepares, transactions) = target.counter.totals();
    if let Some(error) = &finished.error {
        eprintln!("workload: the run stopped: {error}");
        let _ = target.close();
        return ExitCode::from(2);
    }
    let checks = match checks::run_checks(
        &*target.store,
        &finished.workflows,
        args.tasks(),
        &finished.outcomes,
    ) {
        Ok(checks) => checks,
        Err(err) => {
            eprintln!("workload: reading the results back failed: {err}");
            let _ = target.close();
            return ExitCode::from(2);
        }
    };
    let tasks = args.tasks();
    let elapsed_s = finished.elapsed.as_secs_f64();
    let report = Report {
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
        elapsed_s,
        tasks_per_second: tasks as f64 / elapsed_s,
        statements,
        statements_per_task: statements as f64 / tasks as f64,
        prepares,
        transactions,
        operations: finished.latencies.summary(),
        outcomes: finished.outcomes.snapshot(),
        passed: checks.iter().all(|c| c.passed),
        checks,
    };
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json).map_err(|e| e.to_string()));
        if let Err(err) = written {
            eprintln!("workload: cannot write {}: {err}", path.display());
            return ExitCode::from(2);
        }
    }
    if let Err(err) = target.close() {
        eprintln!("workload: cleaning up failed: {err}");
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
