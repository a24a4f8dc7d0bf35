//! The SQLite backend of the task-execution DAL.
//!
//! ```no_run
//! use dal_sqlite::{NewTaskExecution, TaskStore};
//!
//! let store = dal_sqlite::open("tasks.db")?;
//! let task = store.create(&NewTaskExecution::new(uuid::Uuid::now_v7(), "extract"))?;
//! let task = store.mark_ready(task.id)?;
//! # Ok::<(), dal_sqlite::DalError>(())
//! ```
//!
//! SQLite is bundled (no system library needed). Every connection runs in WAL mode with a busy
//! timeout, `foreign_keys` on and `synchronous = NORMAL` (see [`SqliteOptions`]). A read is one
//! statement. A write and the history events it leaves run in one `BEGIN IMMEDIATE`
//! transaction (`BEGIN`, the write, the events' `INSERT`, `COMMIT`: 4 statements; a
//! `create_many` larger than one chunk of bind parameters has an `INSERT` per chunk), so the
//! change and its events are stored together or not at all.

mod backend;
mod errors;
mod open;
mod retention;
mod watch;

pub use backend::SqlitePool;
pub use dal_core::prelude::{self, *};
pub use dal_diesel::open::{InstrumentationFactory, Migrations};
pub use open::{MIGRATIONS, SqliteOptions, SqliteStore, Synchronous, WAKE_INTERVAL, open};

/// The README's Rust examples, compiled as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
