//! The Diesel layer the backends of the task-execution DAL share. **For backend authors**:
//! users depend on `dal-postgres` or `dal-sqlite`, which re-export what they need of it
//! (`schema`, `TaskRow`).
//!
//! - [`types`]: the schema's own SQL types (`Id`, `Time`, `Json`), each encoded by each
//!   database in its own way (`pg.rs`, `sqlite.rs`, features `postgres` and `sqlite`).
//! - [`schema`]: the one `table!` schema; [`row`]: the one row type and its conversions.
//! - [`dialect`]: the expressions each database writes in its dialect (lists, status sets, the
//!   later of two times).
//! - [`statements`]: the statements both databases run alike, written once.
//! - [`prepared`], [`errors`], [`open`]: how statements are sent, error mapping, pool and
//!   migration plumbing.

pub mod bind;
pub mod dialect;
pub mod errors;
pub mod open;
#[cfg(feature = "postgres")]
mod pg;
pub mod prepared;
pub mod row;
pub mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
pub mod statements;
pub mod types;

#[doc(hidden)]
pub use dal_core as __core;
#[doc(hidden)]
pub use diesel as __diesel;
#[doc(hidden)]
pub use statements::prelude as __p;
