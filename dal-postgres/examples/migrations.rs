//! The schema's migrations as a deployment step of their own.
//!
//! ```sh
//! cargo run -p dal-postgres --example migrations -- sql           # the SQL, for review
//! cargo run -p dal-postgres --example migrations -- apply URL     # apply the pending ones
//! cargo run -p dal-postgres --example migrations -- verify URL    # exit 1 unless all applied
//! ```
//!
//! `apply` runs as a role that may run DDL; the application then connects as a role with
//! DML rights only, with `PgOptions::migrations(Migrations::Verify)`.

use std::process::ExitCode;

use dal_postgres::{Migrations, PgOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["sql"] => {
            print!("{}", dal_postgres::migrations_sql());
            Ok(())
        }
        ["apply", url] => PgOptions::new(url).pool_size(1).migrate().map(|applied| {
            if applied.is_empty() {
                println!("the schema is up to date");
            }
            for version in applied {
                println!("applied {version}");
            }
        }),
        ["verify", url] => PgOptions::new(url)
            .pool_size(1)
            .migrations(Migrations::Verify)
            .connect()
            .map(|_| println!("every migration of this build is applied")),
        _ => {
            eprintln!("usage: migrations sql | migrations apply URL | migrations verify URL");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("migrations: {err}");
            ExitCode::FAILURE
        }
    }
}
