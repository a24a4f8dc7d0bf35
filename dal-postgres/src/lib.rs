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

mod backend;
mod listen;
mod migrations;
mod open;
mod retention;
mod session;

pub use backend::PgPool;
pub use dal_core::prelude::{self, *};
pub use dal_diesel::open::{InstrumentationFactory, Migrations};
pub use migrations::{MIGRATIONS, migrations_sql};
pub use open::{INDEX_PLAN_SETTINGS, INDEX_PLANS, PgOptions, PgStore, WAKE_INTERVAL, connect};
