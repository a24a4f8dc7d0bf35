//! Diesel and pool errors as [`DalError`]s: by the kind Diesel reads from the database's error
//! code, and by the connection's state, never by message text.

use dal_core::{DalError, DatabaseErrorKind};
use diesel::result::{DatabaseErrorKind as Kind, Error};

/// Maps an error of a statement.
///
/// On PostgreSQL, Diesel 2.3 reads the SQLSTATE of an error only to pick one of its own kinds
/// (23505, 23503, 23502, 23514, 23001, 23P01, 40001, and class 08 or a connection left
/// unusable, e.g. by 57P01 to 57P03) and keeps the message fields, not the code, for the rest.
/// The message is in the server's `lc_messages` language, so it is not matched here: such
/// errors (40P01 deadlock, 55P03 lock timeout, 57014 statement timeout, ...) are `Other`, with
/// the server's message as their source. SQLite's busy errors, which carry no code at all, are
/// its backend's to recognise.
pub fn from_diesel(err: Error) -> DalError {
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
        Error::DeserializationError(_) => DatabaseErrorKind::UnexpectedData,
        _ => DatabaseErrorKind::Other,
    };
    DalError::Database {
        kind,
        source: Box::new(err),
    }
}

/// Maps a failure to check a connection out of the pool.
pub fn from_pool(err: diesel::r2d2::PoolError) -> DalError {
    DalError::Connection {
        source: Box::new(err),
    }
}
