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

/// Each script does the work it stands for, twice in a row as pgbench repeats it: the create
/// and the transition change one task, the get reads it, the claim takes 32 tasks. (The claim
/// once measured an empty claim for a week: its Ready tasks had no `due_at`.)
#[test]
fn each_script_does_its_operation() {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::Text;

    #[derive(QueryableByName)]
    struct Json {
        #[diesel(sql_type = Text)]
        j: String,
    }

    let schema = dal_tests::provision::postgres::TempSchema::with_connections(1);
    let mut conn = PgConnection::establish(schema.url()).expect("connect to the test schema");
    let read = |name: &str| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/pgbench/").to_owned() + name;
        std::fs::read_to_string(&path)
            .expect("read a pgbench file")
            .replace("dal_pgbench", schema.name())
    };
    let setup = read("setup.sql");
    let (schema_and_seed, vacuum) = setup
        .split_once("VACUUM ANALYZE;")
        .expect("the setup ends with VACUUM ANALYZE");
    conn.batch_execute(schema_and_seed).expect("run the setup");
    conn.batch_execute("VACUUM ANALYZE").expect("vacuum");
    assert_eq!(vacuum.trim(), "");

    for (script, rows) in [
        ("create.sql", 1),
        ("transition.sql", 1),
        ("get.sql", 1),
        ("claim.sql", 32),
    ] {
        let text = read(script);
        for round in 1..=2 {
            let mut variables: Vec<(String, String)> = Vec::new();
            let mut last = None;
            for line in text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
            {
                let line = substitute(line, &variables);
                if let Some(query) = line.strip_suffix("\\gset") {
                    let row: Json = diesel::sql_query(format!(
                        "SELECT row_to_json(q)::text AS j FROM ({query}) AS q"
                    ))
                    .get_result(&mut conn)
                    .unwrap_or_else(|e| panic!("{script}: {query}: {e}"));
                    let object: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(&row.j).expect("a JSON object");
                    for (name, value) in object {
                        let text = value
                            .as_str()
                            .map_or_else(|| value.to_string(), str::to_owned);
                        variables.push((name, format!("'{}'", text.replace('\'', "''"))));
                    }
                } else {
                    last = Some(
                        diesel::sql_query(&line)
                            .execute(&mut conn)
                            .unwrap_or_else(|e| panic!("{script}: {e}")),
                    );
                }
            }
            assert_eq!(
                last,
                Some(rows),
                "{script}, round {round}: rows of the measured statement"
            );
        }
    }
}

/// `line` with each `:name` of `variables` replaced by its value (not the `::` of a cast).
fn substitute(line: &str, variables: &[(String, String)]) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(':') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix(':') {
            out.push_str("::");
            rest = stripped;
            continue;
        }
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        match variables.iter().find(|(n, _)| *n == name) {
            Some((_, value)) => out.push_str(value),
            None => {
                out.push(':');
                out.push_str(&name);
            }
        }
        rest = &after[name.len()..];
    }
    out.push_str(rest);
    out
}
