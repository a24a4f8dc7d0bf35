//! Opening a PostgreSQL store where none can be opened.

use dal_core::DalError;

use crate::cases::opening::{AT_ONCE, TIMEOUT, failure};
use crate::provision::postgres::server_url_with;

/// PostgreSQL: a refused connection, an unknown database, an unknown role.
pub fn a_store_that_cannot_be_opened_fails_at_once() {
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
