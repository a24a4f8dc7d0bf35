//! The workload: the store doing its real job, measured and checked. [`execute`] opens, locks
//! and records the run ([`db`]) or resumes it ([`ledger`]), [`run`]s, [`checks`], [`report`]s.

pub mod args;
pub mod checks;
pub mod db;
pub mod ledger;
pub mod report;
pub mod run;

use std::process::ExitCode;

use args::{Args, Job};
use dal_core::{History, TaskExecutionStore};
use dal_tests::counter::StatementCounter;
use db::{Recorder, Target};
use ledger::{Ledger, Resumed};
use report::Report;

/// Runs the workload and prints its report; exit 0: checks passed, 1: not, 2: error.
pub fn main_with(args: Args) -> ExitCode {
    let report = execute(&args).and_then(|report| {
        print!("{}", report.render());
        args.json.as_ref().map_or(Ok(()), |path| write_json(path, &report))?;
        Ok(report)
    });
    match report {
        Ok(report) if report.passed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(message) => {
            eprintln!("workload: {message}");
            ExitCode::from(2)
        }
    }
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<(), String> {
    let json = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, json).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Runs the workload `args` describe and returns its report; an error: a run that cannot be made.
pub fn execute(args: &Args) -> Result<Report, String> {
    let target = &Target::open(args)?;
    // Held until the run's end: a second workload on this database is refused at once.
    let _lock = db::lock(target)?;
    let mut recorder = Recorder::open(&target.db)?;
    // The first store migrates a new database; readers are not counted, and closed during the run.
    let reader = target.connect(1, History::Kept, &StatementCounter::new())?;
    let (job, ledger, resumed) = prepare(target, &*reader, args, &mut recorder)?;
    drop(reader);
    let counter = StatementCounter::new();
    let pool_size = job.pool_size.unwrap_or(job.runners + 2);
    let store = target.connect(pool_size, job.history(), &counter)?;
    let start = db::footprint(&target.db, None).ok();
    let ran = run::run(&*store, &job, &ledger, Some(recorder), args.quiet);
    // Its connections closed, so that the footprint sees all they did.
    drop(store);
    let (statements, _, _) = counter.totals();
    let (metrics, elapsed, creation) = ran.map_err(|error| format!("the run stopped: {error}"))?;
    let operations = metrics.operations();
    let claims = operations.get("finish_and_claim").map_or(0, |l| l.calls);
    let footprint = db::footprint(&target.db, Some((start.as_deref().unwrap_or_default(), claims)));
    let footprint = footprint.map_err(|err| eprintln!("workload: {err}")).ok();
    let reader = target.connect(1, History::Kept, &StatementCounter::new())?;
    let checks = checks::run_checks(&*reader, &ledger, &metrics);
    let mut checks = checks.map_err(|err| format!("reading the results back failed: {err}"))?;
    if job.history() == History::Off {
        checks.truncate(checks::ROW_CHECKS);
    }
    // The tasks this process took through their whole life.
    let r = resumed.clone().unwrap_or_default();
    let done = r.tasks_finished + r.workflows_pruned * u64::from(job.tasks_per_workflow);
    let tasks_run = job.tasks().saturating_sub(done).max(1);
    let elapsed_s = elapsed.as_secs_f64();
    Ok(Report {
        backend: target.backend,
        location: target.location.clone(),
        run_id: ledger.run.to_string(),
        resumed,
        tasks: job.tasks(),
        tasks_run,
        elapsed_s,
        creation_s: creation.as_secs_f64(),
        tasks_per_second: tasks_run as f64 / elapsed_s,
        statements,
        statements_per_task: statements as f64 / tasks_run as f64,
        operations,
        outcomes: metrics.outcomes(),
        passed: checks.iter().all(|c| c.passed),
        checks,
        footprint,
        job,
    })
}

/// The run recorded, read back (`--resume`), or a new one, refused on a database holding tasks.
fn prepare(
    target: &Target,
    store: &dyn TaskExecutionStore,
    args: &Args,
    recorder: &mut Recorder,
) -> Result<(Job, Ledger, Option<Resumed>), String> {
    let location = &target.location;
    let recorded = recorder.read()?;
    if args.resume {
        let record = recorded.ok_or_else(|| format!("{location} holds no run to resume"))?;
        let (run_id, job) = (record.run_id, record.job);
        let mut ledger = Ledger::new(run_id, job.workflows, job.tasks_per_workflow);
        let found = ledger::resume(store, &mut ledger, record.created_batches);
        let found = found.map_err(|err| format!("cannot read back run {run_id}: {err}"))?;
        return Ok((job, ledger, Some(found)));
    }
    let held = store.count_by_status().map_err(|e| e.to_string())?.total();
    if let Some(record) = recorded {
        return Err(format!("{location} holds run {}: finish it with --resume", record.run_id));
    } else if held > 0 {
        return Err(format!("{location} holds {held} tasks, of no workload run"));
    }
    let (run_id, job) = (uuid::Uuid::now_v7(), args.job.clone());
    recorder.save(db::RunRecord { run_id, job: job.clone(), created_batches: 0 })?;
    let ledger = Ledger::new(run_id, job.workflows, job.tasks_per_workflow);
    Ok((job, ledger, None))
}
