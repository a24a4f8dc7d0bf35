//! SQLite's busy errors, never by message: the store's busy handler (called only while a lock
//! is held, `SQLITE_BUSY`) notes when it gives up, and the error that follows is
//! [`DalError::Busy`]. The rest is mapped as on every database (`dal_diesel::errors`).

use std::cell::Cell;
use std::time::{Duration, Instant};

use dal_core::DalError;
use diesel::SqliteConnection;
use diesel::result::Error;
use diesel::sqlite::BusyDecision;

thread_local! {
    /// Whether a busy handler on this thread gave up since the flag was last read. The handler
    /// runs on the thread that runs the statement, before the statement returns its error.
    static GAVE_UP: Cell<bool> = const { Cell::new(false) };
}

/// The waits between tries while a lock is held, as SQLite's own busy timeout makes them.
const WAITS_MS: [u64; 12] = [1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100];

/// Installs on `conn` a busy handler that waits for a lock for up to `timeout`, as SQLite's
/// busy timeout does, then gives up (the statement fails with `SQLITE_BUSY`) and notes it.
pub(crate) fn wait_when_busy(conn: &mut SqliteConnection, timeout: Duration) {
    let mut since = Instant::now();
    conn.on_busy(move |tries| {
        if tries == 0 {
            since = Instant::now();
        }
        let left = timeout.saturating_sub(since.elapsed());
        if left.is_zero() {
            GAVE_UP.with(|flag| flag.set(true));
            return BusyDecision::GiveUp;
        }
        let wait = WAITS_MS[usize::try_from(tries).unwrap_or(0).min(WAITS_MS.len() - 1)];
        std::thread::sleep(Duration::from_millis(wait).min(left));
        BusyDecision::Retry
    });
}

/// Forgets a give-up noted by a statement whose error was not mapped here.
pub(crate) fn forget_busy() {
    GAVE_UP.with(|flag| flag.set(false));
}

/// Maps an error of a statement.
pub(crate) fn from_diesel(err: Error) -> DalError {
    if GAVE_UP.with(|flag| flag.replace(false)) && matches!(err, Error::DatabaseError(..)) {
        return DalError::Busy { source: Box::new(err) };
    }
    dal_diesel::errors::from_diesel(err)
}
