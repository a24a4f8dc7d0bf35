//! Opening a SQLite store where none can be opened.

use dal_core::DalError;

use dal_tests::cases::opening::{AT_ONCE, TIMEOUT, failure};
use dal_tests::provision::sqlite::TempDatabase;

/// This backend's cases of opening a store.
pub const CASES: &[(&str, fn())] = &[
    (
        "a_store_that_cannot_be_opened_fails_at_once",
        a_store_that_cannot_be_opened_fails_at_once,
    ),
    (
        "verified_migrations_missing_fail_the_open",
        verified_migrations_missing_fail_the_open,
    ),
];

/// SQLite: a file in a directory that does not exist, and a file that is not a database.
pub fn a_store_that_cannot_be_opened_fails_at_once() {
    let db = TempDatabase::new();
    let missing_dir = db.path().with_file_name("no-such-dir");
    let in_missing_dir = missing_dir.join("x.db").to_string_lossy().into_owned();
    let (err, took) = failure(|| {
        dal_sqlite::SqliteOptions::new(in_missing_dir)
            .connect_timeout(TIMEOUT)
            .open()
            .map(drop)
    });
    assert!(matches!(err, DalError::Connection { .. }), "{err:?}");
    assert!(took < AT_ONCE, "took {took:?}: {err}");
    assert!(!missing_dir.exists(), "the directory was created");

    // A file that is not a SQLite database: refused, and left as it was.
    let not_a_database = db.path();
    let contents = vec![b'x'; 8192];
    std::fs::write(&not_a_database, &contents).expect("write the file");
    let (err, took) = failure(|| {
        dal_sqlite::SqliteOptions::new(not_a_database.to_string_lossy().into_owned())
            .connect_timeout(TIMEOUT)
            .open()
            .map(drop)
    });
    assert!(matches!(err, DalError::Database { .. }), "{err:?}");
    assert!(took < AT_ONCE, "took {took:?}: {err}");
    assert_eq!(std::fs::read(&not_a_database).expect("read"), contents);
}

/// Migrations verified instead of applied: a missing file is an error that says so, and nothing
/// is created (no file, no `-wal`, no `-shm`); an empty database fails the open naming every
/// migration and is left as it was; after the migration step (which applies each once) it
/// opens.
pub fn verified_migrations_missing_fail_the_open() {
    use dal_sqlite::Migrations;
    let db = TempDatabase::new();
    let path = db.path().to_string_lossy().into_owned();
    let all: Vec<String> =
        diesel::migration::MigrationSource::<diesel::sqlite::Sqlite>::migrations(
            &dal_sqlite::MIGRATIONS,
        )
        .expect("the embedded migrations")
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    let verify = || {
        dal_sqlite::SqliteOptions::new(path.clone())
            .migrations(Migrations::Verify)
            .open()
            .map(drop)
    };
    let files = || {
        let mut names: Vec<String> = std::fs::read_dir(db.path().parent().expect("a directory"))
            .expect("list the directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
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
    let tables = || {
        use diesel::{Connection, RunQueryDsl};
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = diesel::SqliteConnection::establish(&path).expect("open");
        diesel::sql_query("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table'")
            .get_result::<Count>(&mut conn)
            .expect("sqlite_master")
            .n
    };
    assert_eq!(tables(), 0);
    let step = || dal_sqlite::SqliteOptions::new(path.clone()).migrate();
    assert_eq!(step().expect("first step"), all);
    assert_eq!(step().expect("second step"), Vec::<String>::new());
    verify().expect("every migration applied");
}
