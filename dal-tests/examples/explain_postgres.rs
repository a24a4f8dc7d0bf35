//! Prints the PostgreSQL plans of the DAL's reads and batch writes on a table of a million
//! tasks, as the DAL's own statements run (through `auto_explain`, so the plans are those of the
//! real statements with their real parameters).
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo run -p dal-tests --example explain_postgres`
//!
//! `DAL_EXPLAIN_PLANS=generic` (or `custom`) sets the store's `plan_cache_mode` to
//! `force_generic_plan` (or `force_custom_plan`): a generic plan is the one PostgreSQL keeps for a
//! prepared statement after five executions, made without the parameters' values.
//! `DAL_EXPLAIN_STATS=none` leaves the table as loaded, never vacuumed nor analyzed (a table
//! autovacuum has not reached yet); by default it is `VACUUM ANALYZE`d.
//!
//! Needs a superuser (to load `auto_explain` for its own sessions and read the server log back
//! with `pg_read_file`). `auto_explain` writes the plans to the server log: the example reads them
//! from `pg_current_logfile()` when the server has `logging_collector` on, otherwise from
//! `PG_LOG_FILE` (default: Debian's `/var/log/postgresql/postgresql-<major>-main.log`). Works in
//! a schema of its own, `dal_explain`, dropped at the end.

use std::process::ExitCode;

use chrono::{TimeDelta, Utc};
use dal_postgres::{
    ClaimStore, Finished, PgOptions, RetentionStore, RetriedTask, TaskStore, WorkflowReads,
};
use diesel::{Connection, PgConnection, RunQueryDsl};

const SCHEMA: &str = "dal_explain";

#[derive(diesel::QueryableByName)]
struct WorkflowId {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: uuid::Uuid,
}
const TASKS: i64 = 1_000_000;
const TASKS_PER_WORKFLOW: i64 = 10;

fn main() -> ExitCode {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!(
            "set DATABASE_URL to a PostgreSQL server (a superuser), e.g. postgres://postgres@127.0.0.1:5432/postgres"
        );
        return ExitCode::FAILURE;
    };
    match run(&url) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("explain_postgres failed: {err}");
            ExitCode::FAILURE
        }
    }
}

fn with_options(url: &str, options: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{separator}options={}",
        options.replace(' ', "%20").replace('=', "%3D")
    )
}

fn run(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut admin = PgConnection::establish(url)?;
    diesel::sql_query(format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")).execute(&mut admin)?;
    diesel::sql_query(format!("CREATE SCHEMA {SCHEMA}")).execute(&mut admin)?;
    let in_schema = with_options(url, &format!("-c search_path={SCHEMA}"));
    // Migrations.
    dal_postgres::connect(in_schema.clone())?;
    let mut conn = PgConnection::establish(&in_schema)?;
    eprintln!("filling {TASKS} tasks ({TASKS_PER_WORKFLOW} per workflow execution)...");
    // 80% completed, 10% failed (a tenth of them abandoned), 4% skipped, 2% running (claimed,
    // half of them with a stale heartbeat), 2% ready, 2% not started; a fifth retried.
    diesel::sql_query(format!(
        "INSERT INTO task_executions (id, workflow_execution_id, task_name, status, attempt, max_attempts,
             trigger_rules, task_configuration, created_at, updated_at, claimed_by, heartbeat_at,
             claim_count, abandoned_at, retry_at, due_at, completed_at)
         SELECT dal_uuid_v7(now() - ({TASKS} - g) * interval '1 ms'),
                md5('wf' || (g / {TASKS_PER_WORKFLOW}))::uuid,
                'task-' || (g % {TASKS_PER_WORKFLOW}),
                CASE WHEN g % 100 < 80 THEN 'completed' WHEN g % 100 < 90 THEN 'failed'
                     WHEN g % 100 < 94 THEN 'skipped' WHEN g % 100 < 96 THEN 'running'
                     WHEN g % 100 < 98 THEN 'ready' ELSE 'not_started' END,
                CASE WHEN g % 5 = 0 THEN 2 ELSE 1 END, 3,
                '{{\"type\":\"Always\"}}', '{{}}',
                now() - ({TASKS} - g) * interval '1 ms',
                CASE WHEN g % 100 < 94 THEN now() - interval '1 day' + g * interval '1 ms' ELSE now() END,
                CASE WHEN g % 100 IN (94, 95) THEN md5('runner' || (g % 7))::uuid END,
                CASE WHEN g % 100 = 94 THEN now() - interval '1 hour'
                     WHEN g % 100 = 95 THEN now() END,
                CASE WHEN g % 100 IN (94, 95) THEN 1 ELSE 0 END,
                CASE WHEN g % 100 = 80 THEN now() END,
                CASE WHEN g % 100 = 96 THEN now() + interval '1 hour' END,
                CASE WHEN g % 100 = 96 THEN now() + interval '1 hour'
                     WHEN g % 100 = 97 THEN now() - ({TASKS} - g) * interval '1 ms' END,
                CASE WHEN g % 100 < 94 THEN now() - interval '1 day' + g * interval '1 ms' END
         FROM generate_series(0, {TASKS} - 1) AS g"
    ))
    .execute(&mut conn)?;
    let analyzed = std::env::var("DAL_EXPLAIN_STATS").as_deref() != Ok("none");
    if analyzed {
        diesel::sql_query("VACUUM ANALYZE task_executions").execute(&mut conn)?;
    }
    let plans = match std::env::var("DAL_EXPLAIN_PLANS").as_deref() {
        Ok("generic") => " -c plan_cache_mode=force_generic_plan",
        Ok("custom") => " -c plan_cache_mode=force_custom_plan",
        _ => "",
    };
    eprintln!(
        "statistics: {}; plans: {}",
        if analyzed { "VACUUM ANALYZE" } else { "none" },
        if plans.is_empty() {
            "server default"
        } else {
            plans.trim()
        }
    );

    // A store whose sessions log the plan of every statement to this process's stderr.
    let explained = with_options(
        url,
        &format!(
            "-c search_path={SCHEMA} -c session_preload_libraries=auto_explain \
             -c auto_explain.log_min_duration=0 -c auto_explain.log_analyze=on \
             -c auto_explain.log_timing=off -c auto_explain.log_buffers=on \
             -c auto_explain.log_level=log{plans}"
        ),
    );
    let log_file = server_log(&mut admin)?;
    let start = log_size(&mut admin, &log_file)?;
    let store = PgOptions::new(explained).pool_size(1).connect()?;
    // 100 workflow executions spread over the table.
    let some: Vec<uuid::Uuid> = diesel::sql_query(
        "SELECT md5('wf' || (n * 997))::uuid AS id FROM generate_series(0, 99) AS n",
    )
    .load::<WorkflowId>(&mut conn)?
    .into_iter()
    .map(|row| row.id)
    .collect();
    let one = some[3];
    // Each step is marked in the log by a statement that auto_explain also logs.
    let step = |name: &str| -> Result<(), Box<dyn std::error::Error>> {
        let mut marker = PgConnection::establish(&with_options(
            url,
            "-c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=0",
        ))?;
        diesel::sql_query(format!("SELECT '===== {name}' AS step")).execute(&mut marker)?;
        Ok(())
    };
    step("pending_tasks (100 workflows)")?;
    store.pending_tasks(&some)?;
    step("task_statuses (1 workflow, 3 names)")?;
    store.task_statuses(one, &["task-1", "task-4", "task-9"])?;
    step("statuses_for_workflows (100 workflows)")?;
    store.statuses_for_workflows(&some)?;
    step("complete_workflows (100 workflows)")?;
    store.complete_workflows(&some)?;
    step("has_abandoned_task")?;
    store.has_abandoned_task(one)?;
    step("retry_stats")?;
    store.retry_stats(one)?;
    step("exhausted_tasks")?;
    store.exhausted_tasks(one)?;
    step("count_by_status")?;
    store.count_by_status()?;
    step("list_for_workflow")?;
    store.list_for_workflow(one)?;
    step("list_ready (32)")?;
    store.list_ready(32)?;
    step("find_stale_claims (heartbeat older than 10 minutes)")?;
    store.find_stale_claims(Utc::now() - TimeDelta::minutes(10))?;
    step("list_due_retries (32)")?;
    store.list_due_retries(32)?;
    step("claim_ready (32)")?;
    let claimed = store.claim_ready(uuid::Uuid::now_v7(), 32)?;
    step("complete_many (32 leases)")?;
    let leases: Vec<_> = claimed.iter().map(|c| c.lease).collect();
    store.complete_many(&leases)?;
    let runner = uuid::Uuid::now_v7();
    let mut held: Vec<_> = store
        .claim_ready(runner, 32)?
        .into_iter()
        .map(|c| c.lease)
        .collect();
    let retried = held
        .split_off(held.len().saturating_sub(2))
        .into_iter()
        .map(|lease| RetriedTask {
            lease,
            error: "retried".into(),
            retry_at: Utc::now() + TimeDelta::minutes(1),
        })
        .collect();
    step("finish_and_claim (30 completed, 2 retried, 32 claimed)")?;
    let finished = Finished {
        completed: held,
        failed: Vec::new(),
        retried,
    };
    // What it claims stays claimed, with a fresh heartbeat: no sweep below touches it.
    store.finish_and_claim(runner, &finished, 32)?;
    step("recover_stale_claims (heartbeat older than 10 minutes)")?;
    store.recover_stale_claims(Utc::now() - TimeDelta::minutes(10), 3)?;
    step("prune_finished (1,000 finished tasks scanned)")?;
    store.prune_finished(Utc::now() - TimeDelta::hours(1), 1_000, None)?;
    drop(store);
    print_plans(&mut admin, &log_file, start)?;
    diesel::sql_query(format!("DROP SCHEMA {SCHEMA} CASCADE")).execute(&mut admin)?;
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    text: String,
}

#[derive(diesel::QueryableByName)]
struct Size {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    size: i64,
}

/// The server's log file.
fn server_log(admin: &mut PgConnection) -> Result<String, Box<dyn std::error::Error>> {
    if let Ok(path) = std::env::var("PG_LOG_FILE") {
        return Ok(path);
    }
    let found: Text = diesel::sql_query(
        "SELECT coalesce(current_setting('data_directory') || '/' || pg_current_logfile(),
                '/var/log/postgresql/postgresql-' || current_setting('server_version_num')::int / 10000 || '-main.log') AS text",
    )
    .get_result(admin)?;
    Ok(found.text)
}

fn log_size(admin: &mut PgConnection, path: &str) -> Result<i64, Box<dyn std::error::Error>> {
    let size: Size = diesel::sql_query("SELECT size FROM pg_stat_file($1)")
        .bind::<diesel::sql_types::Text, _>(path)
        .get_result(admin)?;
    Ok(size.size)
}

/// Prints the plans logged since `start`, one block a step.
fn print_plans(
    admin: &mut PgConnection,
    path: &str,
    start: i64,
) -> Result<(), Box<dyn std::error::Error>> {
    let end = log_size(admin, path)?;
    let text: Text = diesel::sql_query("SELECT pg_read_file($1, $2, $3) AS text")
        .bind::<diesel::sql_types::Text, _>(path)
        .bind::<diesel::sql_types::BigInt, _>(start)
        .bind::<diesel::sql_types::BigInt, _>(end - start)
        .get_result(admin)?;
    // Plan lines follow a "Query Text:" line; the markers' own one-node plans are left out,
    // and so is everything before the first marker (the migration check at connect).
    let mut in_step = false;
    let mut in_marker = false;
    for line in text.text.lines() {
        if let Some(at) = line.find("SELECT '===== ") {
            let name = line[at + "SELECT '===== ".len()..].trim_end_matches("' AS step");
            println!("\n{name}");
            (in_step, in_marker) = (true, true);
        } else if line.contains("Query Text:") {
            in_marker = false;
        } else if in_step && !in_marker && line.starts_with('\t') {
            let plan_line: String = line.trim_start_matches('\t').chars().take(150).collect();
            println!("    {plan_line}");
        }
    }
    Ok(())
}
