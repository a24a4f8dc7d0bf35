//! A backend whose stores keep no history ([`dal_core::History::Off`]): the whole suite again,
//! with its cases checking that no events are written where they check the events otherwise,
//! and the statement counts of writes without their event inserts.

use uuid::Uuid;

use crate::backend::{Backend, LockTimeout, TestBackend, TestDatabase};
use crate::operations::Statements;
use dal_core::History;

/// `inner`, with the history off.
pub struct Unlogged {
    /// The backend underneath.
    pub inner: Backend,
    /// The test-name prefix, e.g. `sqlite_no_history`.
    pub name: &'static str,
    /// The README column's heading.
    pub title: &'static str,
    /// What each shape of operation sends without events.
    pub counts: Statements,
    /// The statements a connection keeps prepared after the whole table ran.
    pub prepared: usize,
}

impl TestBackend for Unlogged {
    fn name(&self) -> &'static str {
        self.name
    }

    fn title(&self) -> &'static str {
        self.title
    }

    fn database(&self, connections: u32) -> Box<dyn TestDatabase> {
        self.inner.database(connections)
    }

    fn statement_counts(&self) -> Statements {
        self.counts
    }

    fn prepared_per_connection(&self) -> usize {
        self.prepared
    }

    fn prepared_per_prune_batch(&self) -> usize {
        self.inner.prepared_per_prune_batch()
    }

    fn lock_timeout(&self) -> LockTimeout {
        self.inner.lock_timeout()
    }

    fn id_literal(&self, id: Uuid) -> String {
        self.inner.id_literal(id)
    }

    fn refuse_events_sql(&self, event_type: &str) -> String {
        self.inner.refuse_events_sql(event_type)
    }

    fn empty_tables_sql(&self) -> &'static str {
        self.inner.empty_tables_sql()
    }

    fn history(&self) -> History {
        History::Off
    }
}
