//! The README's quick start: a workflow of three tasks on an embedded SQLite file, taken
//! through their life, one statement per operation.
//!
//! `cargo run -p dal-sqlite --example quickstart [path/to/tasks.db]`

use std::process::ExitCode;

use dal_sqlite::{DalError, NewTaskExecution, TaskExecution, TaskStore};
use uuid::Uuid;

fn main() -> ExitCode {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| std::env::temp_dir().join("dal-quickstart.db").display().to_string());
    match run(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("quickstart failed: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &str) -> Result<(), DalError> {
    // Opens (or creates) the database and applies pending migrations.
    let store = dal_sqlite::open(path)?;
    let workflow = Uuid::now_v7();

    // One multi-row INSERT ... RETURNING for the whole workflow.
    let tasks = store.create_many(&[
        NewTaskExecution::new(workflow, "extract"),
        NewTaskExecution::new(workflow, "transform").with_max_attempts(3),
        NewTaskExecution::new(workflow, "load"),
    ])?;
    let [extract, transform, load] = [&tasks[0], &tasks[1], &tasks[2]];

    // Each transition is one guarded UPDATE ... RETURNING.
    store.mark_ready(extract.id)?;
    store.mark_running(extract.id)?;
    store.mark_completed(extract.id)?;

    store.mark_ready(transform.id)?;
    store.mark_running(transform.id)?;
    store.mark_failed(transform.id, "connection reset by peer")?;
    // attempt = attempt + 1, computed by the database, only while attempts are left.
    store.schedule_retry(transform.id, chrono::Utc::now())?;
    store.mark_running(transform.id)?;
    store.mark_completed(transform.id)?;

    store.mark_skipped(load.id, "nothing to load")?;

    // A transition the state machine does not allow is refused, and changes nothing.
    match store.mark_running(load.id) {
        Err(DalError::InvalidTransition { from, to, .. }) => {
            println!("refused as expected: load cannot go from {from} to {to}");
        }
        other => println!("unexpected: {other:?}"),
    }

    println!("workflow {workflow} in {path}:");
    for task in store.list_for_workflow(workflow)? {
        print_task(&task);
    }
    Ok(())
}

fn print_task(task: &TaskExecution) {
    println!(
        "  {:<10} {:<10} attempt {}/{}  last error: {}",
        task.task_name,
        task.status.as_str(),
        task.attempt,
        task.max_attempts,
        task.last_error.as_deref().unwrap_or("-"),
    );
}
