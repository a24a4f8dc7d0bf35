//! SQLite's errors as [`DalError`]s: its busy errors here, the rest as on every database
//! (`dal_diesel::errors`).

use dal_core::DalError;
use diesel::result::{DatabaseErrorKind as Kind, Error};

/// Maps an error of a statement.
pub(crate) fn from_diesel(err: Error) -> DalError {
    match &err {
        // SQLITE_BUSY and SQLITE_LOCKED: Diesel keeps only the message, whose text SQLite fixes
        // (it is not translated).
        Error::DatabaseError(Kind::Unknown, info)
            if info.message().starts_with("database is locked")
                || info.message().starts_with("database table is locked") =>
        {
            DalError::Busy {
                source: Box::new(err),
            }
        }
        _ => dal_diesel::errors::from_diesel(err),
    }
}
