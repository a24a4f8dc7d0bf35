//! Checks of the PostgreSQL schema's own SQL, which has no SQLite counterpart (SQLite's events are
//! built in Rust). They run as `postgres::schema::<check>` beside the conformance cases.

use diesel::{Connection, PgConnection, RunQueryDsl};

use crate::provision::postgres::TempSchema;

/// A check: its name and the function that runs it.
pub type Check = (&'static str, fn() -> Result<(), String>);

/// Every check, run as `postgres::schema::<name>`.
pub const CHECKS: &[Check] = &[
    (
        "event_data_function_is_inlined",
        event_data_function_is_inlined,
    ),
    ("uuid_v7_function_is_inlined", uuid_v7_function_is_inlined),
];

#[derive(diesel::QueryableByName)]
struct PlanLine {
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[diesel(column_name = "QUERY PLAN")]
    line: String,
}

/// The plan of `sql` in a freshly migrated schema, as `EXPLAIN (VERBOSE)` prints it.
fn verbose_plan(sql: &str) -> Result<String, String> {
    let schema = TempSchema::new();
    drop(schema.connect(|options| options)); // applies the migrations
    let mut conn = PgConnection::establish(schema.url()).map_err(|e| e.to_string())?;
    let lines: Vec<PlanLine> = diesel::sql_query(format!("EXPLAIN (VERBOSE) {sql}"))
        .load(&mut conn)
        .map_err(|e| e.to_string())?;
    Ok(lines
        .into_iter()
        .map(|l| l.line)
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Every write statement builds its event's data with `dal_event_data`. The planner must inline
/// it: called as a function instead, its body is parsed and planned again by every statement
/// that writes an event (about 50 µs each). Inlining needs the function's declared volatility to
/// be no stricter than its body's.
pub fn event_data_function_is_inlined() -> Result<(), String> {
    let plan = verbose_plan(
        "SELECT dal_event_data('{\"reason\": \"r\"}'::jsonb, g, g + 1, g + 2) \
         FROM generate_series(1, 3) AS g",
    )?;
    if plan.contains("dal_event_data(") || !plan.contains("jsonb_build_object(") {
        return Err(format!("dal_event_data is called, not inlined:\n{plan}"));
    }
    Ok(())
}

/// The same for `dal_uuid_v7`, which makes every event's id.
pub fn uuid_v7_function_is_inlined() -> Result<(), String> {
    let plan = verbose_plan("SELECT dal_uuid_v7(now()) FROM generate_series(1, 3)")?;
    if plan.contains("dal_uuid_v7(") || !plan.contains("gen_random_uuid()") {
        return Err(format!("dal_uuid_v7 is called, not inlined:\n{plan}"));
    }
    Ok(())
}
