//! What a run left in the database: the size of each table and index (and of the SQLite file),
//! and on PostgreSQL each table's live and dead rows and autovacuum runs, and each index's
//! entries read per claim. Read over connections of the workload's own, after the store's
//! are closed, so that their statistics are all reported.

use std::thread;
use std::time::{Duration, Instant};

use diesel::sql_types::Text;
use diesel::{QueryableByName, RunQueryDsl};
use serde::{Deserialize, Serialize};

use super::target::{Db, on_conn, pg};

/// One table, index or file, as a query of [`read`] describes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Relation {
    /// The table it belongs to.
    pub table: String,
    /// Its name.
    pub name: String,
    /// `table`, `index` or `file`.
    pub kind: String,
    /// Its size (PostgreSQL: the main fork).
    pub bytes: i64,
    /// SQLite's file: of which free pages, reused before the file grows.
    pub free_bytes: Option<i64>,
    /// PostgreSQL tables: estimated live rows.
    pub live_rows: Option<i64>,
    /// PostgreSQL tables: dead rows not vacuumed yet.
    pub dead_rows: Option<i64>,
    /// PostgreSQL tables: autovacuum runs.
    pub autovacuums: Option<i64>,
    /// PostgreSQL indexes: entries read since the statistics were reset.
    #[serde(skip_serializing)]
    entries: Option<i64>,
    /// PostgreSQL indexes: entries read during the run, per claim (runner cycle).
    pub read_per_claim: Option<f64>,
}

const POSTGRES: &str = r#"
SELECT coalesce(json_agg(r ORDER BY r."table" DESC, r.kind DESC, r.name), '[]')::text AS json FROM (
  SELECT relname AS "table", relname AS name, 'table' AS kind, pg_relation_size(relid) AS bytes,
    n_live_tup AS live_rows, n_dead_tup AS dead_rows, autovacuum_count AS autovacuums,
    NULL::bigint AS entries
  FROM pg_stat_user_tables
  WHERE schemaname = 'SCHEMA' AND relname IN ('task_executions', 'execution_events')
  UNION ALL
  SELECT relname, indexrelname, 'index', pg_relation_size(indexrelid), NULL, NULL, NULL, idx_tup_read
  FROM pg_stat_user_indexes
  WHERE schemaname = 'SCHEMA' AND relname IN ('task_executions', 'execution_events')
) AS r"#;

/// `dbstat` counts each b-tree's pages (the bundled SQLite has it).
const SQLITE: &str = r#"
SELECT json_group_array(json_object('table', t, 'name', n, 'kind', k, 'bytes', b, 'free_bytes', f))
  AS json FROM (
  SELECT '' AS t, 'database file' AS n, 'file' AS k, page_count * page_size AS b,
    freelist_count * page_size AS f
  FROM pragma_page_count(), pragma_page_size(), pragma_freelist_count()
  UNION ALL
  SELECT * FROM (SELECT m.tbl_name, s.name, m.type, sum(s.pgsize), NULL
    FROM dbstat AS s JOIN sqlite_schema AS m ON m.name = s.name
    WHERE m.tbl_name IN ('task_executions', 'execution_events')
    GROUP BY s.name ORDER BY 1 DESC, 3 DESC, 2)
)"#;

#[derive(QueryableByName)]
struct Json {
    #[diesel(sql_type = Text)]
    json: String,
}

/// The footprint now.
pub fn read(db: &Db) -> Result<Vec<Relation>, String> {
    let sql = match db {
        Db::Postgres(_, schema, _) => POSTGRES.replace("SCHEMA", schema),
        Db::Sqlite(_) => SQLITE.to_owned(),
    };
    let query = diesel::sql_query(sql);
    let json: Result<Json, _> = on_conn!(&mut db.connect()?, c => query.get_result(c));
    let failed = |e: &dyn std::fmt::Display| format!("cannot read the footprint: {e}");
    let json = json.map_err(|e| failed(&e))?.json;
    serde_json::from_str(&json).map_err(|e| failed(&e))
}

/// The footprint after the run, each index with its entries read per claim since `start`
/// (PostgreSQL, without a pooler), over `claims` claims.
pub fn after(db: &Db, start: Option<&[Relation]>, claims: u64) -> Result<Vec<Relation>, String> {
    let ended = match db {
        Db::Postgres(url, schema, false) => sessions_ended(url, schema)?,
        _ => false,
    };
    let mut relations = read(db)?;
    for relation in relations.iter_mut().filter(|_| ended) {
        let before = start.and_then(|s| s.iter().find(|r| r.name == relation.name));
        if let (Some(end), Some(start)) = (relation.entries, before.and_then(|r| r.entries)) {
            relation.read_per_claim = Some((end - start) as f64 / claims.max(1) as f64);
        }
    }
    Ok(relations)
}

/// Waits until no session of the run's store is left (they are named after the schema): a
/// PostgreSQL backend keeps its counters for up to a second or more, and reports them all as it
/// exits, before it leaves `pg_stat_activity`. False when they did not end within 15 s.
fn sessions_ended(url: &str, schema: &str) -> Result<bool, String> {
    let mut conn = pg(url)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let sql = format!("SELECT 1 FROM pg_stat_activity WHERE application_name = '{schema}'");
    while Instant::now() < deadline {
        let left = diesel::sql_query(&sql).execute(&mut conn);
        if left.map_err(|e| format!("cannot read pg_stat_activity: {e}"))? == 0 {
            return Ok(true);
        }
        thread::sleep(Duration::from_millis(10));
    }
    eprintln!("workload: the run's sessions did not end; index entries per claim left out");
    Ok(false)
}
