//! The conformance cases, by group. Each is a plain function of the backend, written once; a
//! backend's test runs [`all`] of them, and its variants the groups they can change.

pub mod claims;
pub mod concurrency;
pub mod faults;
pub mod history;
pub mod locking;
pub mod model_based;
pub mod opening;
pub mod retention;
pub mod statements;
pub mod support;
pub mod transitions;
pub mod values;
pub mod wakeups;
pub mod workflows;

use crate::suite::Group;

/// Every group, for a backend that keeps the history.
pub fn all() -> Vec<Group> {
    vec![
        ("transitions", transitions::CASES),
        ("values", values::CASES),
        ("concurrency", concurrency::CASES),
        ("claims", claims::CASES),
        ("history", history::CASES),
        ("workflows", workflows::CASES),
        ("retention", retention::CASES),
        ("locking", locking::CASES),
        ("model", model_based::CASES),
        ("faults", faults::CASES),
        ("statements", statements::CASES),
        ("wakeups", wakeups::CASES),
    ]
}

/// What a store with the history off changes: every write's statements and that it leaves no
/// event, every answer (the model without history), and the invariants under concurrency.
pub fn without_history() -> Vec<Group> {
    vec![
        ("model", model_based::CASES),
        ("statements", statements::CASES),
        ("history", history::OFF),
        ("concurrency", concurrency::CASES),
    ]
}

/// What another way to call or to connect (the async interface, a pooler, a DML-only role)
/// changes: every operation's answer (the generated sequences call each one) and its
/// statements, and the invariants under concurrency.
pub fn calls() -> Vec<Group> {
    vec![
        ("model", model_based::CASES),
        ("statements", statements::CASES),
        ("concurrency", concurrency::CASES),
        ("wakeups", wakeups::CASES),
    ]
}
