//! Opening a store where none can be opened: each fails at once with its typed error, before
//! the pool would start retrying, and leaves nothing behind. How a store fails to open is each
//! backend's own, so each backend has its case (`TestBackend::own_cases`).

use std::time::{Duration, Instant};

use dal_core::DalError;

/// The pool's timeout in these cases: a failure that waited for it took at least this long.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Far below [`TIMEOUT`]: the failure came from the first attempt, not from the pool's retries.
pub const AT_ONCE: Duration = Duration::from_secs(5);

/// Opens a store with `open` and returns its error and how long the call took.
pub fn failure(open: impl FnOnce() -> Result<(), DalError>) -> (DalError, Duration) {
    let started = Instant::now();
    let err = open().expect_err("the store must not open");
    (err, started.elapsed())
}
