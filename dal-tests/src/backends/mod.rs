//! The two backends of this workspace as the suite tests them. Each backend crate's
//! `tests/conformance.rs` runs the suite with its own; `cargo test -p dal-tests` runs it with
//! both ([`ALL`]).

pub mod postgres;
pub mod sqlite;

use crate::backend::Backend;

/// `dal-postgres`.
pub static POSTGRES: postgres::Postgres = postgres::Postgres;

/// `dal-sqlite`.
pub static SQLITE: sqlite::Sqlite = sqlite::Sqlite;

/// Both backends, in the order of the README's columns.
pub const ALL: [Backend; 2] = [&POSTGRES, &SQLITE];
