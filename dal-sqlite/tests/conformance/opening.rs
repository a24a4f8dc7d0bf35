//! Opening a SQLite store where none can be opened.

use dal_core::DalError;
use dal_sqlite::{Migrations, SqliteOptions};

use dal_tests::cases::opening::{AT_ONCE, TIMEOUT, failure};
use dal_tests::provision::sqlite::TempDatabase;

/// The error of opening a store on `path`, which fails at once.
fn error_at_once(path: &std::path::Path) -> DalError {
    let options = SqliteOptions::new(path.to_string_lossy()).connect_timeout(TIMEOUT);
    let (err, took) = failure(|| options.open().map(drop));
    assert!(took < AT_ONCE, "took {took:?}: {err}");
    err
}

/// A file in a missing directory (not created), and a non-database file (left as it was).
pub fn a_store_that_cannot_be_opened_fails_at_once() {
    let db = TempDatabase::new();
    let missing_dir = db.path().with_file_name("no-such-dir");
    let err = error_at_once(&missing_dir.join("x.db"));
    assert!(matches!(err, DalError::Connection { .. }), "{err:?}");
    assert!(!missing_dir.exists(), "the directory was created");
    let contents = vec![b'x'; 8192];
    std::fs::write(db.path(), &contents).expect("write the file");
    let err = error_at_once(&db.path());
    assert!(matches!(err, DalError::Database { .. }), "{err:?}");
    assert_eq!(std::fs::read(db.path()).expect("read"), contents);
}

/// `Verify`: a missing file is an error that says so, nothing created; an empty database fails
/// naming every migration, left as it was; after the migration step (each once) it opens.
pub fn verified_migrations_missing_fail_the_open() {
    let db = TempDatabase::new();
    let all = dal_diesel::open::versions::<diesel::sqlite::Sqlite>(&dal_sqlite::MIGRATIONS);
    let (all, options) =
        (all.expect("the embedded migrations"), || SqliteOptions::new(db.path().to_string_lossy()));
    let verify = || options().migrations(Migrations::Verify).open().map(drop);
    let files = || {
        let dir = std::fs::read_dir(db.path().parent().unwrap()).unwrap();
        let mut names: Vec<String> =
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        names
    };
    match verify() {
        Err(DalError::Connection { source }) => {
            assert!(source.to_string().contains("does not exist"), "{source}")
        }
        other => panic!("expected a missing file, got {other:?}"),
    }
    assert_eq!(files(), Vec::<String>::new(), "Verify wrote a file");
    // An empty database (a file of no bytes): not migrated, and left as it was.
    std::fs::write(db.path(), b"").expect("an empty database");
    match verify() {
        Err(DalError::SchemaNotMigrated { pending }) => assert_eq!(pending, all),
        other => panic!("expected SchemaNotMigrated, got {other:?}"),
    }
    assert_eq!(files(), ["tasks.db"], "Verify wrote a file");
    assert_eq!(std::fs::read(db.path()).expect("read").len(), 0);
    let step = || options().migrate().expect("the step");
    assert_eq!((step(), step()), (all, Vec::<String>::new()));
    verify().expect("every migration applied");
}
