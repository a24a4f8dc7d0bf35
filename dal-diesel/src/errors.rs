//! Diesel and pool errors as [`DalError`]s: PostgreSQL's by their SQLSTATE, SQLite's by the
//! kind Diesel reads from its result code, and by the connection's state; never by message
//! text. SQLite's busy errors are its backend's to recognise.

use dal_core::{DalError, DatabaseErrorKind as Dal};
use diesel::result::{DatabaseErrorKind as Kind, Error};

/// Maps an error of a statement.
pub fn from_diesel(err: Error) -> DalError {
    let kind = match &err {
        Error::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, _) => {
            return DalError::Connection { source: Box::new(err) };
        }
        Error::DatabaseError(kind, info) => match info.sqlstate() {
            Some(code) => match by_sqlstate(code.as_str()) {
                Some(kind) => kind,
                None => {
                    return DalError::Connection { source: Box::new(err) };
                }
            },
            None => match kind {
                Kind::UniqueViolation => Dal::UniqueViolation,
                Kind::CheckViolation
                | Kind::NotNullViolation
                | Kind::ForeignKeyViolation
                | Kind::ExclusionViolation
                | Kind::RestrictViolation => Dal::ConstraintViolation,
                _ => Dal::Other,
            },
        },
        Error::DeserializationError(_) => Dal::UnexpectedData,
        _ => Dal::Other,
    };
    DalError::Database { kind, source: Box::new(err) }
}

/// The kind of a PostgreSQL error by its SQLSTATE; `None` for a session the server ended
/// (class 08, and 57P01 to 57P03: shut down, crashed, cannot connect now).
fn by_sqlstate(code: &str) -> Option<Dal> {
    Some(match code {
        "23505" => Dal::UniqueViolation,
        "40001" => Dal::SerializationFailure,
        "40P01" => Dal::Deadlock,
        "55P03" => Dal::LockNotAvailable,
        "57014" => Dal::QueryCanceled,
        "57P01" | "57P02" | "57P03" => return None,
        _ if code.starts_with("08") => return None,
        _ if code.starts_with("23") => Dal::ConstraintViolation,
        _ => Dal::Other,
    })
}

/// Maps a failure to check a connection out of the pool.
pub fn from_pool(err: diesel::r2d2::PoolError) -> DalError {
    DalError::Connection { source: Box::new(err) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_their_kinds() {
        let cases = [
            ("23505", Some(Dal::UniqueViolation)),
            ("23514", Some(Dal::ConstraintViolation)),
            ("23503", Some(Dal::ConstraintViolation)),
            ("40001", Some(Dal::SerializationFailure)),
            ("40P01", Some(Dal::Deadlock)),
            ("55P03", Some(Dal::LockNotAvailable)),
            ("57014", Some(Dal::QueryCanceled)),
            ("57P01", None),
            ("08006", None),
            ("42P01", Some(Dal::Other)),
        ];
        for (code, kind) in cases {
            assert_eq!(by_sqlstate(code), kind, "{code}");
        }
    }
}
