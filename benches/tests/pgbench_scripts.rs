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
