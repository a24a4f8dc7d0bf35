//! The suite: every case against every backend, as one libtest-compatible test binary.

use libtest_mimic::{Arguments, Failed, Trial};

use crate::cases::{self, statements};
use crate::fixture::BackendKind;
use crate::provision;

/// Every trial: `<backend>::<group>::<case>` for each backend, group and case, the checks of
/// the PostgreSQL schema's own SQL (`postgres::schema::<check>`), and the checks that involve
/// no backend.
pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for kind in BackendKind::ALL {
        for (group, list) in cases::groups() {
            for case in list {
                let run = case.run;
                trials.push(Trial::test(
                    format!("{kind}::{group}::{}", case.name),
                    move || {
                        run(kind);
                        Ok(())
                    },
                ));
            }
        }
    }
    for &(name, check) in cases::restarts::POSTGRES_ONLY {
        trials.push(Trial::test(
            format!("postgres::restarts::{name}"),
            move || {
                check();
                Ok(())
            },
        ));
    }
    for &(name, check) in cases::locking::POSTGRES_ONLY {
        trials.push(Trial::test(
            format!("postgres::locking::{name}"),
            move || {
                check();
                Ok(())
            },
        ));
    }
    trials.push(Trial::test(
        "readme::statement_table_matches_the_suite",
        || {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
            let readme =
                std::fs::read_to_string(path).map_err(|e| Failed::from(format!("{path}: {e}")))?;
            statements::readme_table_matches(&readme).map_err(Failed::from)
        },
    ));
    trials
}

/// The test binary's `main`: runs the trials selected by the command line (the same flags as
/// libtest: filters, `--exact`, `--test-threads`, `--list`, ...), then stops the PostgreSQL
/// container if one was started.
pub fn main() {
    let args = Arguments::from_args();
    let conclusion = libtest_mimic::run(&args, trials());
    provision::postgres::shutdown();
    conclusion.exit();
}
