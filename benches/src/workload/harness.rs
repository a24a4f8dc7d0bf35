//! What the workload takes from `dal-tests` (rewritten on its own): the statement counter and
//! the reference model. Nothing else of it is used here.

pub use dal_tests::counter::StatementCounter;
pub use dal_tests::model::replay;
