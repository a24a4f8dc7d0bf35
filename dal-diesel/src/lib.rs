//! The Diesel layer the backends of the task-execution DAL share. **For backend authors**:
//! users depend on `dal-postgres` or `dal-sqlite`.
//!
//! One schema ([`schema`]) over the schema's own SQL types ([`types`], encoded by each database
//! in `pg.rs` and `sqlite.rs`), the reads written once ([`mod@reads`]), a plan as the SQL of a
//! guarded write ([`mod@write`]), and what opening a store is made of ([`open`]).

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
