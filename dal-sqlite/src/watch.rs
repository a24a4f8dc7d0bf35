//! Other processes' writes to the file, seen by its change counter (`PRAGMA data_version`) on a
//! read-only connection of its own, read while runners wait, at most once every interval.

use std::sync::Weak;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use dal_core::wake::Bell;
use dal_core::{DalError, Result};
use dal_diesel::reads::ready;
use dal_diesel::schema::task_executions as t;
use diesel::dsl::count_star;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel::sqlite::SqliteConnection;

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = BigInt)]
    data_version: i64,
}

fn version(conn: &mut SqliteConnection) -> QueryResult<i64> {
    Ok(diesel::sql_query("PRAGMA data_version").get_result::<Version>(conn)?.data_version)
}

/// A read-only connection to the existing database at `path` (a path or a `file:` URI): a
/// missing file is an error that says so, and nothing is created, not even `-wal`/`-shm` of a
/// database in rollback mode.
pub(crate) fn read_only(path: &str) -> Result<SqliteConnection> {
    let uri = match path.strip_prefix("file:") {
        Some(rest) => format!("file:{rest}{}mode=ro", if rest.contains('?') { '&' } else { '?' }),
        None if !std::path::Path::new(path).exists() => {
            return Err(DalError::Connection {
                source: format!("the SQLite database {path} does not exist").into(),
            });
        }
        // In a URI `%`, `?` and `#` are escapes and delimiters.
        None => format!(
            "file:{}?mode=ro",
            path.replace('%', "%25").replace('?', "%3f").replace('#', "%23")
        ),
    };
    SqliteConnection::establish(&uri).map_err(|e| DalError::Connection { source: Box::new(e) })
}

/// The `Ready` tasks due by `now`, and the earliest queue position after it.
fn queue(
    conn: &mut SqliteConnection,
    now: DateTime<Utc>,
) -> QueryResult<(i64, Vec<DateTime<Utc>>)> {
    let due = t::table.filter(t::status.eq(ready())).filter(t::due_at.le(Some(now)));
    let later = t::table.filter(t::status.eq(ready())).filter(t::due_at.gt(Some(now)));
    let later = later.select(t::due_at).order(t::due_at).first::<Option<DateTime<Utc>>>(conn);
    Ok((
        due.select(count_star()).get_result(conn)?,
        later.optional()?.flatten().into_iter().collect(),
    ))
}

/// Watches `path` for `bell` until it is dropped: when a caller waits and the counter moved
/// since the last look (any connection's commit, this process's too; or at the first look),
/// the queue is read and
/// as many waiters wake as tasks are due (at most all), one more when the next falls due.
pub(crate) fn spawn(path: String, every: Duration, bell: Weak<Bell>) {
    let watch = move || {
        let (mut conn, mut seen, mut looked) = (None, None, None::<Instant>);
        loop {
            let Some(bell) = bell.upgrade() else { return };
            if !bell.until_waited(every) {
                continue;
            }
            if let Some(wait) = looked.and_then(|at| every.checked_sub(at.elapsed())) {
                drop(bell);
                std::thread::sleep(wait);
                continue;
            }
            looked = Some(Instant::now());
            if conn.is_none() {
                conn = read_only(&path).ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            let looked_at = version(c).and_then(|now| {
                if seen.replace(now).is_none_or(|before| before != now) {
                    let (due, later) = queue(c, bell.now())?;
                    bell.ring(due.unsigned_abs().min(bell.waiting() as u64), later);
                }
                Ok(())
            });
            if looked_at.is_err() {
                conn = None; // opened again at the next look
            }
        }
    };
    if let Err(err) = std::thread::Builder::new().name("dal-sqlite-watch".into()).spawn(watch) {
        tracing::warn!(error = %err, "no watcher of other processes' writes: waiters wake on this store's writes and their timeouts only");
    }
}
