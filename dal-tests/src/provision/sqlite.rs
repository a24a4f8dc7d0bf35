//! SQLite: a new database file in a temporary directory per fixture.

use dal_sqlite::{SqliteOptions, SqliteStore};

/// A SQLite database in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDatabase(tempfile::TempDir);

impl TempDatabase {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("dal-test-").tempdir();
        TempDatabase(dir.expect("create a temporary directory for SQLite"))
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.0.path().join("tasks.db")
    }

    pub fn open(&self, configure: impl FnOnce(SqliteOptions) -> SqliteOptions) -> SqliteStore {
        let options = configure(SqliteOptions::new(self.path().to_string_lossy()));
        options.open().expect("open a SQLite store on a temporary file")
    }
}

impl Default for TempDatabase {
    fn default() -> Self {
        TempDatabase::new()
    }
}
