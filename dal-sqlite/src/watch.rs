//! Other processes' writes to the file, seen by its change counter (`PRAGMA data_version`),
//! read every interval on a read-only connection of its own while runners wait.

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use dal_core::wake::Bell;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel::sqlite::SqliteConnection;

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = BigInt)]
    data_version: i64,
}

fn version(conn: &mut SqliteConnection) -> Option<i64> {
    diesel::sql_query("PRAGMA data_version")
        .get_result::<Version>(conn)
        .ok()
        .map(|v| v.data_version)
}

/// The earliest queue position after `now` among the `Ready` tasks: a task another process
/// made due later.
fn next_due(conn: &mut SqliteConnection, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    use dal_diesel::schema::task_executions as t;
    let due =
        t::table.filter(t::status.eq(dal_diesel::reads::ready())).filter(t::due_at.gt(Some(now)));
    due.select(t::due_at).order(t::due_at).first::<Option<DateTime<Utc>>>(conn).ok().flatten()
}

/// Reads the change counter of `path` every `every` while `bell` has waiters, until it is
/// dropped. A change while this process wrote nothing is another process's: every waiter wakes
/// once. A change while this process wrote too (`writes` moved) may be either: one waiter wakes.
/// Either way, one more wakes when the next task due later falls due.
pub(crate) fn spawn(path: String, every: Duration, writes: Arc<AtomicU64>, bell: Weak<Bell>) {
    let watch = move || {
        let mut conn = None;
        let (mut seen, mut wrote) = (None, writes.load(Ordering::Acquire));
        loop {
            std::thread::sleep(every);
            let Some(bell) = bell.upgrade() else { return };
            if bell.waiting() == 0 {
                continue;
            }
            if conn.is_none() {
                conn = crate::open::read_only(&path).ok();
            }
            let now = conn.as_mut().and_then(version);
            if now.is_none() {
                conn = None; // opened again at the next look
            }
            let writing = writes.load(Ordering::Acquire);
            if let (Some(before), Some(now), Some(conn)) = (seen, now, conn.as_mut())
                && before != now
            {
                let later = next_due(conn, bell.now());
                if writing == wrote {
                    bell.ring_all();
                    bell.ring(0, later);
                } else {
                    bell.ring(1, later);
                }
            }
            (seen, wrote) = (now.or(seen), writing);
        }
    };
    if let Err(err) = std::thread::Builder::new().name("dal-sqlite-watch".into()).spawn(watch) {
        tracing::warn!(error = %err, "no watcher of other processes' writes: waiters wake on this store's writes and their timeouts only");
    }
}
