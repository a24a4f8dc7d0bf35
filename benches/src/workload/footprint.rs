//! What a run left in the database: the size of each table and index, the tables' tuple and
//! vacuum counters (PostgreSQL), and how many index entries the run read per claim
//! (PostgreSQL). Read over a connection of its own, after the store's connections are closed,
//! so none of it is counted among the store's statements.

use std::collections::BTreeMap;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection};
use serde::Serialize;

use super::target::{Database, redact};

/// The tables the footprint covers.
pub const TABLES: [&str; 2] = ["task_executions", "execution_events"];

/// Where `name` (a table, an index, or a figure of the whole file) goes in a listing: the file
/// first, then each table of [`TABLES`] followed by its indexes.
pub fn relation_order(name: &str) -> (usize, bool, &str) {
    match TABLES.iter().position(|table| name.contains(table)) {
        Some(i) => (i + 1, !TABLES.contains(&name), name),
        None => (0, false, name),
    }
}

/// The index the claim reads (`claim_ready`: the due `Ready` tasks).
pub const DUE_INDEX: &str = "task_executions_due_idx";

/// How long to wait for the run's PostgreSQL sessions to end (and so report their counters).
const SESSIONS_END_WITHIN: Duration = Duration::from_secs(15);

/// The database's footprint after a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Footprint {
    /// Each table (its heap on PostgreSQL, its b-tree on SQLite) and each of its indexes.
    pub relations: Vec<RelationSize>,
    /// PostgreSQL: the tables' counters from `pg_stat_user_tables`.
    pub tables: Vec<TableActivity>,
    /// SQLite: the database file.
    pub file: Option<FileSize>,
    /// PostgreSQL: index entries read by the run.
    pub index_reads: Option<IndexReads>,
}

/// The size of one table or index.
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct RelationSize {
    /// The table it belongs to.
    #[diesel(sql_type = Text, column_name = table_name)]
    pub table: String,
    /// Its name (the table's own for the table).
    #[diesel(sql_type = Text)]
    pub name: String,
    /// `table` or `index`.
    #[diesel(sql_type = Text)]
    pub kind: String,
    /// Bytes: `pg_relation_size` (the main fork) on PostgreSQL; the pages `dbstat` counts on
    /// SQLite.
    #[diesel(sql_type = BigInt)]
    pub bytes: i64,
}

/// A PostgreSQL table's counters at the end of the run (`pg_stat_user_tables`).
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct TableActivity {
    /// The table.
    #[diesel(sql_type = Text, column_name = table_name)]
    pub table: String,
    /// `n_live_tup`: estimated live rows.
    #[diesel(sql_type = BigInt)]
    pub live_tuples: i64,
    /// `n_dead_tup`: estimated dead rows not vacuumed yet.
    #[diesel(sql_type = BigInt)]
    pub dead_tuples: i64,
    /// `autovacuum_count`: times autovacuum vacuumed it.
    #[diesel(sql_type = BigInt)]
    pub autovacuums: i64,
    /// `autoanalyze_count`: times autovacuum analyzed it.
    #[diesel(sql_type = BigInt)]
    pub autoanalyzes: i64,
}

/// A SQLite database file.
#[derive(Debug, Clone, Serialize, QueryableByName)]
pub struct FileSize {
    /// `page_count * page_size`.
    #[diesel(sql_type = BigInt)]
    pub bytes: i64,
    /// Of which free pages (`freelist_count * page_size`): space deleted rows left, reused
    /// before the file grows.
    #[diesel(sql_type = BigInt)]
    pub free_bytes: i64,
}

/// Index entries the run read, per `claim_ready` call (PostgreSQL, `idx_tup_read` of
/// `pg_stat_user_indexes`, the end's value less the start's).
#[derive(Debug, Clone, Serialize)]
pub struct IndexReads {
    /// `claim_ready` calls.
    pub claims: u64,
    /// Scans of [`DUE_INDEX`] (`idx_scan`): one per claim when the counters are complete,
    /// since nothing else of the workload reads it.
    pub due_index_scans: u64,
    /// Entries read from [`DUE_INDEX`].
    pub due_index: u64,
    /// Entries read from every index of `task_executions` (by every statement of the run:
    /// claims, completions, sweeps, pruning).
    pub all_indexes: u64,
    /// `due_index / claims`.
    pub due_index_per_claim: f64,
    /// `all_indexes / claims`.
    pub all_indexes_per_claim: f64,
}

/// The counters of each index of `task_executions`, by name, at one moment.
pub type IndexCounters = BTreeMap<String, IndexCounter>;

/// One index's counters (`pg_stat_user_indexes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, QueryableByName)]
pub struct IndexCounter {
    /// `idx_scan`: scans begun.
    #[diesel(sql_type = BigInt)]
    pub scans: i64,
    /// `idx_tup_read`: entries read.
    #[diesel(sql_type = BigInt)]
    pub entries: i64,
}

#[derive(Debug, QueryableByName)]
struct NamedIndexCounter {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(embed)]
    counter: IndexCounter,
}

#[derive(Debug, QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// The index counters of the run's schema now (PostgreSQL; `None` on SQLite). Taken before
/// the run, on tables just created and empty: whatever the migrations' sessions have not
/// reported yet read no entries, so the reading is exact.
pub fn index_counters(database: &Database) -> Result<Option<IndexCounters>, String> {
    match database {
        Database::Sqlite(_) => Ok(None),
        Database::Postgres { url, schema, .. } => {
            let mut conn = pg_connect(url)?;
            read_index_counters(&mut conn, schema).map(Some)
        }
    }
}

/// Reads the footprint once the run's store is closed. `start` is what [`index_counters`]
/// returned before the run, `claims` the run's `claim_ready` calls.
pub fn read(
    database: &Database,
    start: Option<&IndexCounters>,
    claims: u64,
) -> Result<Footprint, String> {
    match database {
        Database::Sqlite(path) => read_sqlite(path),
        Database::Postgres {
            url,
            schema,
            pooled,
        } => read_postgres(url, schema, *pooled, start, claims),
    }
}

fn pg_connect(url: &str) -> Result<PgConnection, String> {
    PgConnection::establish(url).map_err(|e| format!("cannot connect to {}: {e}", redact(url)))
}

fn read_index_counters(conn: &mut PgConnection, schema: &str) -> Result<IndexCounters, String> {
    let rows: Vec<NamedIndexCounter> = diesel::sql_query(
        "SELECT indexrelname::text AS name, idx_scan AS scans, idx_tup_read AS entries \
         FROM pg_stat_user_indexes WHERE schemaname = $1 AND relname = 'task_executions'",
    )
    .bind::<Text, _>(schema)
    .load(conn)
    .map_err(|e| format!("cannot read pg_stat_user_indexes: {e}"))?;
    Ok(rows.into_iter().map(|r| (r.name, r.counter)).collect())
}

/// PostgreSQL 15 keeps each session's counters in the session and adds them to the shared
/// statistics at the end of a transaction at most once a second; an idle session reports what
/// is left up to 10 s later (`PGSTAT_IDLE_INTERVAL`), and a session that ends reports
/// everything as it exits. So read right after the run, `idx_tup_read` would miss up to the
/// last second or more of every connection. Instead the run's store is closed first, and this
/// waits until none of its sessions (told apart by `application_name`, the schema's name) is
/// left in `pg_stat_activity`: a backend reports its counters (`pgstat_shutdown_hook`, a
/// `before_shmem_exit` callback) before it leaves `pg_stat_activity` (`pgstat_beshutdown_hook`,
/// an `on_shmem_exit` callback, run after those). `pg_stat_clear_snapshot()` then drops any
/// statistics this session cached, so the reads below see the shared values as they are.
fn wait_for_sessions_to_end(conn: &mut PgConnection, schema: &str) -> Result<bool, String> {
    let deadline = Instant::now() + SESSIONS_END_WITHIN;
    loop {
        let left: Count = diesel::sql_query(
            "SELECT count(*) AS count FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind::<Text, _>(schema)
        .get_result(conn)
        .map_err(|e| format!("cannot read pg_stat_activity: {e}"))?;
        if left.count == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        thread::sleep(Duration::from_millis(10));
    }
    diesel::sql_query("SELECT pg_stat_clear_snapshot()")
        .execute(conn)
        .map_err(|e| format!("cannot clear the statistics snapshot: {e}"))?;
    Ok(true)
}

fn read_postgres(
    url: &str,
    schema: &str,
    pooled: bool,
    start: Option<&IndexCounters>,
    claims: u64,
) -> Result<Footprint, String> {
    let mut conn = pg_connect(url)?;
    // Behind a proxy the run's server sessions are the proxy's, kept open after the store
    // closed: their counters are not all reported yet, and this cannot wait for them to end.
    let settled = !pooled && wait_for_sessions_to_end(&mut conn, schema)?;
    let tables = format!("'{}'", TABLES.join("', '"));
    let relations: Vec<RelationSize> = diesel::sql_query(format!(
        "SELECT relname::text AS table_name, relname::text AS name, 'table' AS kind, \
                pg_relation_size(relid) AS bytes \
         FROM pg_stat_user_tables WHERE schemaname = $1 AND relname IN ({tables}) \
         UNION ALL \
         SELECT relname::text, indexrelname::text, 'index', pg_relation_size(indexrelid) \
         FROM pg_stat_user_indexes WHERE schemaname = $1 AND relname IN ({tables}) \
         ORDER BY 1 DESC, 3 DESC, 2"
    ))
    .bind::<Text, _>(schema)
    .load(&mut conn)
    .map_err(|e| format!("cannot read the relation sizes: {e}"))?;
    let activity: Vec<TableActivity> = diesel::sql_query(format!(
        "SELECT relname::text AS table_name, n_live_tup AS live_tuples, n_dead_tup AS dead_tuples, \
                autovacuum_count AS autovacuums, autoanalyze_count AS autoanalyzes \
         FROM pg_stat_user_tables WHERE schemaname = $1 AND relname IN ({tables}) ORDER BY 1 DESC"
    ))
    .bind::<Text, _>(schema)
    .load(&mut conn)
    .map_err(|e| format!("cannot read pg_stat_user_tables: {e}"))?;
    let index_reads = match (start, settled) {
        (Some(start), true) => {
            let end = read_index_counters(&mut conn, schema)?;
            Some(index_reads(start, &end, claims))
        }
        (_, false) if pooled => {
            eprintln!(
                "note: behind a transaction pooler the run's server sessions outlive the store; \
                 index entries per claim left out"
            );
            None
        }
        (_, false) => {
            eprintln!(
                "note: the run's sessions did not end within {} s; index entries per claim left out",
                SESSIONS_END_WITHIN.as_secs()
            );
            None
        }
        (None, true) => None,
    };
    Ok(Footprint {
        relations,
        tables: activity,
        file: None,
        index_reads,
    })
}

/// The entries read between `start` and `end`, per claim.
fn index_reads(start: &IndexCounters, end: &IndexCounters, claims: u64) -> IndexReads {
    let since_start = |name: &str, end: &IndexCounter| {
        let start = start.get(name).copied().unwrap_or_default();
        let delta = |end: i64, start: i64| u64::try_from(end - start).unwrap_or_default();
        (
            delta(end.scans, start.scans),
            delta(end.entries, start.entries),
        )
    };
    let (due_index_scans, due_index) = end
        .get(DUE_INDEX)
        .map(|counter| since_start(DUE_INDEX, counter))
        .unwrap_or_default();
    let all_indexes = end
        .iter()
        .map(|(name, counter)| since_start(name, counter).1)
        .sum();
    let per_claim = |entries: u64| entries as f64 / claims.max(1) as f64;
    IndexReads {
        claims,
        due_index_scans,
        due_index,
        all_indexes,
        due_index_per_claim: per_claim(due_index),
        all_indexes_per_claim: per_claim(all_indexes),
    }
}

fn read_sqlite(path: &Path) -> Result<Footprint, String> {
    let mut conn = SqliteConnection::establish(&path.display().to_string())
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let file: FileSize = diesel::sql_query(
        "SELECT page_count * page_size AS bytes, freelist_count * page_size AS free_bytes \
         FROM pragma_page_count(), pragma_page_size(), pragma_freelist_count()",
    )
    .get_result(&mut conn)
    .map_err(|e| format!("cannot read the page counts of {}: {e}", path.display()))?;
    let tables = format!("'{}'", TABLES.join("', '"));
    // The `dbstat` virtual table (SQLITE_ENABLE_DBSTAT_VTAB, which the bundled SQLite of
    // libsqlite3-sys has) counts each b-tree's pages. Without it, only the file's size is
    // known.
    let relations = diesel::sql_query(format!(
        "SELECT m.tbl_name AS table_name, s.name AS name, m.type AS kind, sum(s.pgsize) AS bytes \
         FROM dbstat AS s JOIN sqlite_schema AS m ON m.name = s.name \
         WHERE m.tbl_name IN ({tables}) GROUP BY s.name ORDER BY 1 DESC, 3 DESC, 2"
    ))
    .load::<RelationSize>(&mut conn)
    .unwrap_or_else(|err| {
        eprintln!("note: no dbstat in this SQLite ({err}); only the file's size is reported");
        Vec::new()
    });
    Ok(Footprint {
        relations,
        tables: Vec::new(),
        file: Some(file),
        index_reads: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_reads_are_the_differences_per_claim() {
        let at = |scans, entries| IndexCounter { scans, entries };
        let start = IndexCounters::from([
            (DUE_INDEX.to_owned(), at(1, 10)),
            ("other".to_owned(), at(1, 5)),
        ]);
        let end = IndexCounters::from([
            (DUE_INDEX.to_owned(), at(51, 110)),
            ("other".to_owned(), at(9, 105)),
            ("new".to_owned(), at(1, 50)),
        ]);
        let reads = index_reads(&start, &end, 50);
        assert_eq!(
            (reads.due_index_scans, reads.due_index, reads.all_indexes),
            (50, 100, 250)
        );
        assert_eq!(reads.due_index_per_claim, 2.0);
        assert_eq!(reads.all_indexes_per_claim, 5.0);
    }
}
