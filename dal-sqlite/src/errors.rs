//! Diesel, pool and migration errors of SQLite, as [`DalError`]s.

use dal_core::{DalError, DatabaseErrorKind};
use diesel::result::{DatabaseErrorKind as Kind, Error};

/// Maps an error of a statement.
pub(crate) fn from_diesel(err: Error) -> DalError {
    let kind = match &err {
        Error::DatabaseError(Kind::UniqueViolation, _) => DatabaseErrorKind::UniqueViolation,
        Error::DatabaseError(
            Kind::CheckViolation | Kind::NotNullViolation | Kind::ForeignKeyViolation,
            _,
        ) => DatabaseErrorKind::ConstraintViolation,
        // SQLITE_BUSY and SQLITE_LOCKED: Diesel keeps only the message, whose text SQLite fixes.
        Error::DatabaseError(Kind::Unknown, info)
            if info.message().starts_with("database is locked")
                || info.message().starts_with("database table is locked") =>
        {
            return DalError::Busy {
                source: Box::new(err),
            };
        }
        Error::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, _) => {
            return DalError::Connection {
                source: Box::new(err),
            };
        }
        Error::DeserializationError(_) => DatabaseErrorKind::UnexpectedData,
        _ => DatabaseErrorKind::Other,
    };
    DalError::Database {
        kind,
        source: Box::new(err),
    }
}

/// Maps a failure to check a connection out of the pool.
pub(crate) fn from_pool(err: diesel::r2d2::PoolError) -> DalError {
    DalError::Connection {
        source: Box::new(err),
    }
}
