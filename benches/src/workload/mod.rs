//! The workload runner: the main job of the project.

pub mod args;
pub mod checks;
pub mod footprint;
pub mod ledger;
pub mod metrics;
pub mod plan;
pub mod record;
pub mod report;
pub mod run;
pub mod scale;
pub mod target;

use std::process::ExitCode;

use args::Args;
use dal_core::TaskExecutionStore;
use dal_tests::counter::StatementCounter;
use plan::Plan;
use record::{Recorder, RunLock};
use report::Report;
use target::Target;
use uuid::Uuid;

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

/// What the run is: the arguments and the plan, for a new run (recorded now) or for the run
/// recorded in the database (`--resume`). Refuses a new run on a database that holds tasks.
/// `store` reads the database; its statements are not counted.
fn prepare(
    target: &Target,
    store: &dyn TaskExecutionStore,
    args: &Args,
    recorder: &mut Recorder,
) -> Result<(Args, Plan), String> {
    let location = &target.location;
    let recorded = recorder
        .read()
        .map_err(|err| format!("cannot read the run record in {location}: {err}"))?;
    if args.resume {
        let record =
            recorded.ok_or_else(|| format!("{location} holds no workload run to resume"))?;
        let resumed = Args {
            database_url: args.database_url.clone(),
            schema: args.schema.clone(),
            resume: true,
            json: args.json.clone(),
            keep: args.keep,
            quiet: args.quiet,
            ..record.args
        };
        let plan = Plan::resume(
            store,
            record.run_id,
            resumed.workflows,
            record.created_batches,
        )
        .map_err(|err| {
            format!(
                "cannot read back run {} in {location}: {err}",
                record.run_id
            )
        })?;
        return Ok((resumed, plan));
    }
    let held = store
        .count_by_status()
        .map_err(|err| format!("cannot count the tasks in {location}: {err}"))?
        .total();
    if let Some(record) = recorded {
        return Err(format!(
            "{location} holds workload run {} ({held} tasks): finish it with --resume, or use a \
             new database",
            record.run_id
        ));
    }
    if held > 0 {
        return Err(format!(
            "{location} holds {held} tasks that no workload run recorded: use a new database"
        ));
    }
    let run_id = Uuid::now_v7();
    recorder
        .start(run_id, args)
        .map_err(|err| format!("cannot record the run in {location}: {err}"))?;
    Ok((args.clone(), Plan::fresh(run_id, args.workflows)))
}

fn execute_in(target: &Target, args: &Args) -> Result<Report, String> {
    // Held until the run's end: a second workload on this database is refused at once.
    let _lock = RunLock::take(target)?;
    // Opening a store migrates a new database; the record's table goes beside the DAL's. This
    // store reads what the database holds, and is closed before the run.
    let reader = target.connect(&StatementCounter::new())?;
    let mut recorder = Recorder::open(&target.database)
        .map_err(|err| format!("cannot open the run record in {}: {err}", target.location))?;
    let (args, plan) = prepare(target, &*reader, args, &mut recorder)?;
    drop(reader);
    let args = &args;
    let counter = StatementCounter::new();
    let store = target.connect(&counter)?;
    let start = footprint::index_counters(&target.database).unwrap_or_else(|err| {
        eprintln!("workload: {err}; index entries per claim left out");
        None
    });
    // The run drops the store: its connections are closed before the footprint is read.
    let finished = run::run(store, args, &plan, Some(recorder));
    let (statements, prepares, transactions) = counter.totals();
    if let Some(error) = &finished.error {
        return Err(format!("the run stopped: {error}"));
    }
    let operations = finished.latencies.summary();
    // The claims: `claim_ready`s, or the runner cycles that claim.
    let claims = ["claim_ready", "finish_and_claim"]
        .iter()
        .filter_map(|op| operations.get(*op))
        .map(|l| l.calls)
        .sum();
    let footprint = footprint::read(&target.database, start.as_ref(), claims)
        .map_err(|err| eprintln!("workload: reading the footprint failed: {err}"))
        .ok();
    // The checks read through a store of their own, not counted.
    let store = target.connect(&StatementCounter::new())?;
    let mut checks = checks::run_checks(&*store, &finished.ledger, &finished.outcomes)
        .map_err(|err| format!("reading the results back failed: {err}"))?;
    if args.history == args::HistoryMode::Off {
        checks.retain(|check| checks::ROW_CHECKS.contains(&check.name));
    }
    let tasks = args.tasks();
    // The tasks this process took through the end of their life.
    let done_before = plan.resumed.as_ref().map_or(0, |r| {
        r.tasks_finished + r.workflows_pruned * u64::from(args.tasks_per_workflow)
    });
    let tasks_run = tasks.saturating_sub(done_before).max(1);
    let elapsed_s = finished.elapsed.as_secs_f64();
    Ok(Report {
        backend: target.backend,
        location: target.location.clone(),
        run_id: plan.run_id.to_string(),
        resumed: plan.resumed.clone(),
        workflows: args.workflows,
        tasks,
        tasks_run,
        runners: args.runners,
        crashing_runners: args.crashing_runners,
        batch: args.batch,
        work_us: args.work_us,
        fail_rate: args.fail_rate,
        crash_rate: args.crash_rate,
        retention: args.retention.clone(),
        elapsed_s,
        creation_s: finished.creation.as_secs_f64(),
        tasks_per_second: tasks_run as f64 / elapsed_s,
        statements,
        statements_per_task: statements as f64 / tasks_run as f64,
        prepares,
        transactions,
        operations,
        outcomes: finished.outcomes.snapshot(),
        passed: checks.iter().all(|c| c.passed),
        checks,
        footprint,
    })
}
