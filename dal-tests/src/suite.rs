//! The suite: every case against every backend given, as one libtest-compatible test binary.

use libtest_mimic::{Arguments, Failed, Trial};

use crate::backend::Backend;
use crate::operations;
use crate::provision;

/// Every trial for `backends`: `<backend>::<group>::<case>` for each backend, group and case,
/// each backend's own cases, and the check of the README's statement table against the
/// backends' counts.
pub fn trials(backends: &[Backend]) -> Vec<Trial> {
    let mut trials = Vec::new();
    for &kind in backends {
        let ignored = kind.unavailable().is_some();
        for (group, list) in kind.groups() {
            for case in list {
                let run = case.run;
                trials.push(
                    Trial::test(format!("{kind}::{group}::{}", case.name), move || {
                        run(kind);
                        Ok(())
                    })
                    .with_ignored_flag(ignored),
                );
            }
        }
        for own in kind.own_cases() {
            trials.push(
                Trial::test(format!("{kind}::{}::{}", own.group, own.name), move || {
                    (own.run)();
                    Ok(())
                })
                .with_ignored_flag(ignored),
            );
        }
    }
    let backends = backends.to_vec();
    trials.push(Trial::test(
        "readme::statement_table_matches_the_backends",
        move || {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
            let readme =
                std::fs::read_to_string(path).map_err(|e| Failed::from(format!("{path}: {e}")))?;
            operations::check_readme_table(&readme, &backends).map_err(Failed::from)
        },
    ));
    trials
}

/// The test binary's `main` for `backends`: runs the trials selected by the command line (the
/// same flags as libtest: filters, `--exact`, `--test-threads`, `--list`, ...), then stops the
/// PostgreSQL container if one was started. A backend crate's `tests/conformance.rs` calls it
/// with its backend.
pub fn main(backends: &[Backend]) {
    let args = Arguments::from_args();
    for kind in backends {
        if let Some(why) = kind.unavailable() {
            eprintln!("{kind}: its cases are ignored: {why}");
        }
    }
    let conclusion = libtest_mimic::run(&args, trials(backends));
    provision::postgres::shutdown();
    conclusion.exit();
}
