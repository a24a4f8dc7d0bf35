//! The conformance cases. Each is a plain function of the backend, written once; the suite
//! runs every case against every backend.

pub mod claims;
pub mod concurrency;
pub mod create;
pub mod cycle;
pub mod faults;
pub mod history;
pub mod hostile;
pub mod locking;
pub mod model_based;
pub mod opening;
pub mod retention;
pub mod statements;
pub mod sub_status;
pub mod support;
pub mod targeted;
pub mod transitions;
pub mod values;
pub mod workflows;

use crate::backend::Backend;

/// One conformance case.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name inside its group.
    pub name: &'static str,
    /// Runs the case against a backend; panics on failure.
    pub run: fn(Backend),
}

/// A group of cases: its name and its cases.
pub type Group = (&'static str, &'static [Case]);

/// Makes a [`Case`] of a function.
#[macro_export]
macro_rules! case {
    ($f:ident) => {
        $crate::cases::Case {
            name: stringify!($f),
            run: $f,
        }
    };
}

/// Every group of cases, for a backend that keeps the history or not: with the history off,
/// the history's group gives way to a case that no event is written.
pub fn groups_for(history: dal_core::History) -> Vec<Group> {
    let mut groups = groups();
    if history == dal_core::History::Off {
        for (name, cases) in &mut groups {
            if *name == "history" {
                *cases = history::OFF;
            }
        }
    }
    groups
}

/// Every group of cases.
pub fn groups() -> Vec<Group> {
    vec![
        ("create", create::CASES),
        ("transitions", transitions::CASES),
        ("values", values::CASES),
        ("hostile", hostile::CASES),
        ("concurrency", concurrency::CASES),
        ("claims", claims::CASES),
        ("targeted_claims", targeted::CASES),
        ("runner_cycle", cycle::CASES),
        ("sub_status", sub_status::CASES),
        ("history", history::CASES),
        ("workflows", workflows::CASES),
        ("retention", retention::CASES),
        ("locking", locking::CASES),
        ("model", model_based::CASES),
        ("faults", faults::CASES),
        ("statements", statements::CASES),
    ]
}
