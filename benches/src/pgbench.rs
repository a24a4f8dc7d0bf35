//! pgbench scripts carrying the DAL's own statements, so that anyone can measure what their
//! PostgreSQL server does with exactly that SQL and compare it with the DAL's time
//! (`benches/pgbench/run.sh`).
//!
//! The scripts are generated from the statements the DAL sends: the generator runs each
//! operation on a PostgreSQL store, with a fixed clock and fixed runner ids, and takes the SQL
//! and the bound values from Diesel's instrumentation. The task ids become pgbench variables set
//! by a lookup before the measured statement; every other value is written as a constant. A test
//! regenerates the scripts and fails if the committed ones differ, so they follow the DAL.

use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dal_core::{ManualClock, NewTaskExecution, TaskExecutionStore, TaskStatus};
use dal_tests::counter::StatementLog;
use dal_tests::provision::postgres::TempSchema;
use uuid::Uuid;

/// The scripts, by file name, and the setup and run files, as text.
pub type Files = Vec<(&'static str, String)>;

/// Tasks seeded by `setup.sql`: finished work, but for the oldest, which is `Ready` (the
/// transition script resets it again and again). With the table's statistics saying that `Ready`
/// is rare, as in a store that has run for a while, the planner picks the status index for the
/// claim, as it does for the DAL's prepared statement.
pub const SEED_TASKS: u32 = 10_000;

/// The fixed time of the generated statements.
fn fixed_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 123_456_000).unwrap_or_default() // 2026-01-01T00:00:00.123456Z
}

/// Generates the files on the test PostgreSQL server (see `dal_tests::provision::postgres`).
pub fn generate() -> Result<Files, String> {
    let schema = TempSchema::with_connections(1);
    let log = StatementLog::keeping_whole_sql();
    let clock = Arc::new(ManualClock::new(fixed_time()));
    let store = schema.connect(|o| o.pool_size(1).clock(clock).instrumentation(log.factory()));
    let store: &dyn TaskExecutionStore = &store;
    let err = |e: dal_core::DalError| e.to_string();
    let runner = Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0001);
    let wf = Uuid::from_u128(0x0000_0000_0000_7000_8000_0000_0000_0002);

    // Warm the statement cache, so that each capture below is one statement.
    let warm = store
        .create(&NewTaskExecution::new(wf, "warm").with_status(TaskStatus::Ready))
        .map_err(err)?;
    store.reset_task_for_recovery(warm.id).map_err(err)?;
    store.get(warm.id).map_err(err)?;
    store.claim_ready(runner, 32).map_err(err)?;
    store
        .create_many(
            &(0..40)
                .map(|i| NewTaskExecution::new(wf, format!("r{i}")).with_status(TaskStatus::Ready))
                .collect::<Vec<_>>(),
        )
        .map_err(err)?;

    let one = |f: &mut dyn FnMut() -> Result<(), String>| -> Result<String, String> {
        let (result, counts) = log.measure(f);
        result?;
        match counts.sql.as_slice() {
            [statement] => Ok(statement.clone()),
            other => Err(format!("expected one statement, got {}", other.len())),
        }
    };
    let mut created = None;
    let create = one(&mut || {
        created = Some(
            store
                .create(&NewTaskExecution::new(wf, "a-new-task"))
                .map_err(err)?,
        );
        Ok(())
    })?;
    let created = created.ok_or("no task created")?;
    let transition = one(&mut || {
        store
            .reset_task_for_recovery(warm.id)
            .map(drop)
            .map_err(err)
    })?;
    let get = one(&mut || store.get(warm.id).map(drop).map_err(err))?;
    let claim = one(&mut || store.claim_ready(runner, 32).map(drop).map_err(err))?;

    // One task, over and over, as `cargo bench` does (`postgres/transition_with_event`).
    let lookup = "SELECT id AS tid FROM dal_pgbench_ids WHERE n = 1 \\gset\n";
    let created_vars = [
        (created.id.to_string(), ":tid".to_owned()),
        (wf.to_string(), ":wf".to_owned()),
        ("\"a-new-task\"".to_owned(), ":name".to_owned()),
        // The default trigger rules, whose debug form is not JSON.
        (
            format!("{:?}", created.trigger_rules),
            format!("'{}'", created.trigger_rules),
        ),
    ];
    let files: Files = vec![
        ("setup.sql", setup_sql()),
        (
            "create.sql",
            format!(
                "-- The DAL's create: the logged INSERT ... RETURNING.\n\
                 SELECT gen_random_uuid() AS tid, gen_random_uuid() AS wf, 'task' AS name \\gset\n{}\n",
                script_statement(&create, &created_vars)?
            ),
        ),
        (
            "transition.sql",
            format!(
                "-- The DAL's reset_task_for_recovery: the guarded UPDATE and its event in one statement.\n{lookup}{}\n",
                script_statement(&transition, &[(warm.id.to_string(), ":tid".to_owned())])?
            ),
        ),
        (
            "get.sql",
            format!(
                "-- The DAL's get.\n{lookup}{}\n",
                script_statement(&get, &[(warm.id.to_string(), ":tid".to_owned())])?
            ),
        ),
        (
            "claim.sql",
            format!(
                "-- The DAL's claim_ready(32): the locking subquery, the UPDATE and the events in one statement,\n\
                 -- after 32 new Ready tasks, as `cargo bench` does (`postgres/claim_32`), with UUIDv7 ids as the DAL's.\n\
                 INSERT INTO task_executions (id, workflow_execution_id, task_name, status, attempt, max_attempts, \
                 trigger_rules, task_configuration, created_at, updated_at, due_at) SELECT dal_uuid_v7(clock_timestamp()), w.id, 't' || g, \
                 'ready', 1, 1, '{{}}', '{{}}', now(), now(), {due} FROM generate_series(1, 32) AS g, (SELECT gen_random_uuid() AS id) AS w;\n{}\n",
                script_statement(&claim, &[])?,
                due = due_literal(),
            ),
        ),
    ];
    Ok(files)
}

/// The schema (the DAL's migrations, in order) and the seed, in the `dal_pgbench` schema.
fn setup_sql() -> String {
    let mut sql = String::from(
        "-- Generated by `cargo run -p dal-benches --example pgbench_scripts`: the DAL's migrations and a seed.\n\
         DROP SCHEMA IF EXISTS dal_pgbench CASCADE;\nCREATE SCHEMA dal_pgbench;\nSET search_path = dal_pgbench;\n",
    );
    for migration in MIGRATIONS {
        let _ = writeln!(sql, "{}", migration.trim());
    }
    let _ = write!(
        sql,
        "INSERT INTO task_executions (id, workflow_execution_id, task_name, status, attempt, max_attempts,\n\
         \x20   trigger_rules, task_configuration, created_at, updated_at, due_at)\n\
         SELECT dal_uuid_v7(now() - ({SEED_TASKS} - g) * interval '1 ms'), md5('wf' || (g / 10))::uuid, 'task-' || (g % 10),\n\
         \x20   CASE WHEN g = 0 THEN 'ready' ELSE 'completed' END, 1, 3, '{{\"type\":\"Always\"}}', '{{}}', now(), now(),\n\
         \x20   CASE WHEN g = 0 THEN {due} END\n\
         FROM generate_series(0, {SEED_TASKS} - 1) AS g;\n\
         CREATE TABLE dal_pgbench_ids AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM task_executions;\n\
         CREATE UNIQUE INDEX ON dal_pgbench_ids (n);\n\
         VACUUM ANALYZE;\n",
        due = due_literal(),
    );
    sql
}

/// The `due_at` of the seeded and inserted Ready tasks: the generated statements' time, as the
/// DAL sets it when a task enters Ready at that time, so that the claim finds them due.
fn due_literal() -> String {
    format!(
        "'{}'::timestamptz",
        fixed_time().format("%Y-%m-%dT%H:%M:%S%.6fZ")
    )
}

/// The PostgreSQL migrations' `up.sql`, in order (`benches/tests/pgbench_scripts.rs` checks
/// that every migration of `dal-postgres` is here).
pub const MIGRATIONS: [&str; 7] = [
    include_str!("../../dal-postgres/migrations/2026-11-26-000000_create_task_executions/up.sql"),
    include_str!("../../dal-postgres/migrations/2026-11-26-000001_claims/up.sql"),
    include_str!("../../dal-postgres/migrations/2026-11-26-000002_execution_events/up.sql"),
    include_str!("../../dal-postgres/migrations/2026-11-26-000003_status_index/up.sql"),
    include_str!("../../dal-postgres/migrations/2026-11-26-000004_inline_event_data/up.sql"),
    include_str!("../../dal-postgres/migrations/2026-11-26-000005_queue_at_scale/up.sql"),
    include_str!("../../dal-postgres/migrations/2026-12-02-000006_sub_status/up.sql"),
];

/// The captured statement (`SQL -- binds: [...]`) as a pgbench line: each `$k` replaced by the
/// text `variables` gives for its value's debug form (a pgbench variable, or a constant the
/// debug form does not spell), or else by its value as a constant.
pub fn script_statement(captured: &str, variables: &[(String, String)]) -> Result<String, String> {
    let (sql, binds) = captured
        .rsplit_once(" -- binds: ")
        .ok_or_else(|| format!("no binds in {captured:.80}"))?;
    let binds = split_list(binds.trim())?;
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits: String = rest[at + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let k: usize = digits
            .parse()
            .map_err(|_| format!("a $ without a number in {sql:.80}"))?;
        let value = binds.get(k - 1).ok_or_else(|| format!("no bind ${k}"))?;
        match variables.iter().find(|(debug, _)| debug == value) {
            Some((_, variable)) => out.push_str(variable),
            None => out.push_str(&literal(value)?),
        }
        rest = &rest[at + 1 + digits.len()..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits Diesel's debug list of binds at its top-level commas.
fn split_list(list: &str) -> Result<Vec<String>, String> {
    let inner = list
        .strip_prefix('[')
        .and_then(|l| l.strip_suffix(']'))
        .ok_or_else(|| format!("not a list: {list:.80}"))?;
    let mut items = Vec::new();
    let (mut depth, mut quoted, mut escaped, mut current) = (0i32, false, false, String::new());
    for c in inner.chars() {
        if quoted {
            current.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '[' | '{' | '(' => depth += 1,
            ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                items.push(current.trim().to_owned());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        items.push(current.trim().to_owned());
    }
    Ok(items)
}

/// A bind's debug form as an SQL constant, for the types the DAL binds.
fn literal(debug: &str) -> Result<String, String> {
    let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
    if debug == "None" {
        return Ok("NULL".to_owned());
    }
    if let Some(inner) = debug
        .strip_prefix("Some(")
        .and_then(|d| d.strip_suffix(')'))
    {
        return literal(inner);
    }
    if debug == "true" || debug == "false" || debug.parse::<i64>().is_ok() {
        return Ok(debug.to_owned());
    }
    if let Some(text) = debug.strip_prefix('"').and_then(|d| d.strip_suffix('"')) {
        return Ok(quote(&text.replace("\\\"", "\"").replace("\\\\", "\\")));
    }
    if debug == "Object {}" {
        return Ok("'{}'".to_owned());
    }
    if let Some(items) = debug.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let texts: Vec<String> = split_list(&format!("[{items}]"))?
            .iter()
            .map(|item| item.trim_matches('"').to_owned())
            .collect();
        return Ok(quote(&format!("{{{}}}", texts.join(","))));
    }
    if Uuid::parse_str(debug).is_ok() || debug.parse::<DateTime<Utc>>().is_ok() {
        return Ok(quote(debug));
    }
    Err(format!("no SQL constant for the bind {debug:.80}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_become_constants_or_variables() {
        let captured = "SELECT $1, $2, $3, $4, $5, $6, $7, $10 -- binds: [\"a'b\", None, Some(3), true, [\"ready\", \"running\"], Object {}, 2026-01-01T00:00:00.123456Z, 0, 0, 019c0000-0000-7000-8000-000000000001]";
        let variables = [(
            "019c0000-0000-7000-8000-000000000001".to_owned(),
            ":tid".to_owned(),
        )];
        assert_eq!(
            script_statement(captured, &variables),
            Ok("SELECT 'a''b', NULL, 3, true, '{ready,running}', '{}', '2026-01-01T00:00:00.123456Z', :tid".to_owned())
        );
        assert!(literal("Object {\"k\": Number(1)}").is_err());
    }
}
