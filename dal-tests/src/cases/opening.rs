//! Opening a store where none can be opened: each fails at once with its typed error, before
//! the pool would start retrying, and leaves nothing behind.

use std::time::{Duration, Instant};

use dal_core::DalError;

use super::Case;
use crate::case;
use crate::fixture::BackendKind;
use crate::provision::postgres::server_url_with;
use crate::provision::sqlite::TempDatabase;

/// The cases of this group.
pub const CASES: &[Case] = &[case!(a_store_that_cannot_be_opened_fails_at_once)];

/// The pool's timeout in these cases: a failure that waited for it took at least this long.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Far below [`TIMEOUT`]: the failure came from the first attempt, not from the pool's retries.
const AT_ONCE: Duration = Duration::from_secs(5);

/// Opens a store with `open` and returns its error and how long the call took.
fn failure(open: impl FnOnce() -> Result<(), DalError>) -> (DalError, Duration) {
    let started = Instant::now();
    let err = open().expect_err("the store must not open");
    (err, started.elapsed())
}

fn a_store_that_cannot_be_opened_fails_at_once(kind: BackendKind) {
    match kind {
        BackendKind::Sqlite => {
            let db = TempDatabase::new();
            let missing_dir = db.path().with_file_name("no-such-dir");
            let in_missing_dir = missing_dir.join("x.db").to_string_lossy().into_owned();
            let (err, took) = failure(|| {
                dal_sqlite::Options::new(in_missing_dir)
                    .connect_timeout(TIMEOUT)
                    .open()
                    .map(drop)
            });
            assert!(matches!(err, DalError::Connection { .. }), "{err:?}");
            assert!(took < AT_ONCE, "took {took:?}: {err}");
            assert!(!missing_dir.exists(), "the directory was created");

            // A file that is not a SQLite database: refused, and left as it was.
            let not_a_database = db.path();
            let contents = vec![b'x'; 8192];
            std::fs::write(&not_a_database, &contents).expect("write the file");
            let (err, took) = failure(|| {
                dal_sqlite::Options::new(not_a_database.to_string_lossy().into_owned())
                    .connect_timeout(TIMEOUT)
                    .open()
                    .map(drop)
            });
            assert!(matches!(err, DalError::Database { .. }), "{err:?}");
            assert!(took < AT_ONCE, "took {took:?}: {err}");
            assert_eq!(std::fs::read(&not_a_database).expect("read"), contents);
        }
        BackendKind::Postgres => {
            // A refused connection (nothing listens on port 1), an unknown database, an
            // unknown role. (A refused password needs a server that asks for one; the test
            // servers trust their clients.)
            let urls = [
                "postgres://postgres@127.0.0.1:1/postgres".to_owned(),
                server_url_with(&[("dbname", "dal_no_such_database")]),
                server_url_with(&[("user", "dal_no_such_role")]),
            ];
            for url in urls {
                let (err, took) = failure(|| {
                    dal_postgres::Options::new(url.clone())
                        .connect_timeout(TIMEOUT)
                        .connect()
                        .map(drop)
                });
                assert!(matches!(err, DalError::Connection { .. }), "{url}: {err:?}");
                assert!(took < AT_ONCE, "{url}: took {took:?}: {err}");
            }
        }
    }
}
