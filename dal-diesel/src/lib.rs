//! The Diesel layer the backends of the task-execution DAL share. **For backend authors**:
//! users depend on `dal-postgres` or `dal-sqlite`.
//!
//! - [`types`]: the schema's own SQL types (`Id`, `Instant`, `Json`), each encoded by each
//!   database in its own way (`pg.rs`, `sqlite.rs`, features `postgres` and `sqlite`).
//! - [`schema`], [`row`]: the one schema and the rows read from it.
//! - [`write`]: a plan as the values and the SQL text of a guarded write, for both databases.
//! - [`reads`], [`dialect`]: the reads, written once, and the expressions whose SQL differs.
//! - [`prepared`], [`errors`], [`open`]: statements kept prepared, error mapping, pools,
//!   options and migrations.

pub mod bind;
pub mod dialect;
pub mod errors;
pub mod open;
#[cfg(feature = "postgres")]
mod pg;
pub mod prepared;
pub mod reads;
pub mod row;
pub mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
pub mod types;
pub mod write;

#[doc(hidden)]
pub use dal_core as __core;
#[doc(hidden)]
pub use diesel as __diesel;
#[doc(hidden)]
pub use reads::prelude as __p;
