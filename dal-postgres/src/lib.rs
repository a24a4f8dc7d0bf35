//! The PostgreSQL backend of the task-execution DAL.
//!
//! ```no_run
//! use dal_postgres::{NewTaskExecution, TaskStore};
//!
//! let store = dal_postgres::connect("postgres://postgres@127.0.0.1/postgres")?;
//! let task = store.create(&NewTaskExecution::new(uuid::Uuid::now_v7(), "extract"))?;
//! let task = store.mark_ready(task.id)?;
//! # Ok::<(), dal_postgres::DalError>(())
//! ```
//!
//! Native `uuid`, `timestamptz` and `jsonb` columns; every operation is one statement, which
//! PostgreSQL runs atomically in its own implicit transaction. Links the system's libpq by
//! default (TLS to managed servers works through it); the `bundled-libpq` feature builds
//! libpq from source instead.

mod history;
mod leases;
mod migrations;
mod open;
mod retention;
mod session;
mod statements;

// The user API, by name: the prelude, and what a user names beyond it. The interface a backend
// implements (`Backend`, plans, event specs, ids) stays in `dal_core`, for backend authors.
#[cfg(feature = "tokio")]
pub use dal_core::AsyncStore;
pub use dal_core::prelude::{self, *};
pub use dal_core::{ManualClock, StatusSet, Store, validate};
pub use dal_diesel::open::InstrumentationFactory;
pub use dal_diesel::open::Migrations;
pub use dal_diesel::row::Row as TaskRow;
pub use dal_diesel::{bind, schema, types};
pub use migrations::{MIGRATION_SQL, MIGRATIONS, MigrationSql, migrations_sql};
pub use open::{INDEX_PLAN_SETTINGS, INDEX_PLANS, PgOptions, PgStore, connect};
pub use statements::{PgBackend, PgPool};
