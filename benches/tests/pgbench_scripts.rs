//! The committed pgbench scripts carry the DAL's current statements.

#[test]
fn committed_pgbench_scripts_are_the_dals_statements() {
    let files = dal_benches::pgbench::generate().expect("generate the scripts");
    for (name, generated) in files {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/pgbench/").to_owned() + name;
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} differs from the DAL's statements; regenerate with `DATABASE_URL=postgres://... \
             cargo run -p dal-benches --example pgbench_scripts`"
        );
    }
}

#[test]
fn the_setup_has_every_migration() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../dal-postgres/migrations");
    let migrations = std::fs::read_dir(dir)
        .expect("read the PostgreSQL migrations")
        .filter_map(Result::ok)
        .filter(|entry| entry.path().join("up.sql").is_file())
        .count();
    assert_eq!(
        migrations,
        dal_benches::pgbench::MIGRATIONS.len(),
        "a migration of {dir} is missing from dal_benches::pgbench::MIGRATIONS"
    );
}
