//! Diesel, pool and migration errors of PostgreSQL, as [`DalError`]s.

use dal_core::{DalError, DatabaseErrorKind};
use diesel::result::{DatabaseErrorKind as Kind, Error};

/// Maps an error of a statement.
pub(crate) fn from_diesel(err: Error) -> DalError {
    let kind = match &err {
        Error::DatabaseError(Kind::UniqueViolation, _) => DatabaseErrorKind::UniqueViolation,
        Error::DatabaseError(
            Kind::CheckViolation
            | Kind::NotNullViolation
            | Kind::ForeignKeyViolation
            | Kind::ExclusionViolation
            | Kind::RestrictViolation,
            _,
        ) => DatabaseErrorKind::ConstraintViolation,
        Error::DatabaseError(Kind::SerializationFailure, _) => {
            DatabaseErrorKind::SerializationFailure
        }
        Error::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, _) => {
            return DalError::Connection {
                source: Box::new(err),
            };
        }
        // Diesel keeps PostgreSQL's message, not its SQLSTATE, for these two.
        Error::DatabaseError(Kind::Unknown, info)
            if info.message().contains("lock timeout")
                || info.message().starts_with("could not obtain lock") =>
        {
            return DalError::Busy {
                source: Box::new(err),
            };
        }
        Error::DatabaseError(Kind::Unknown, info)
            if info.message().starts_with("canceling statement") =>
        {
            DatabaseErrorKind::Cancelled
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
