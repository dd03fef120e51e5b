//! Model-free simulations of the operating layer (ledgers, gossip), seeded and
//! deterministic, so that its bets are decided by running code rather than by
//! argument.
//!
//! Every simulation here is pure: parameters and a seed in, an outcome struct
//! out, no IO and no knowledge of specs, results or the CLI. The experiment
//! kinds wrap them into table rows.

pub mod audit_log;
pub mod bandwidth;
pub mod gossip;
pub mod revocation;
pub mod royalty;

use thiserror::Error;

/// A simulation parameter outside the range the model is defined for.
///
/// Names the parameter as the spec spells it, so the message can be shown
/// to the person who wrote the spec without translation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`{param}` {problem}")]
pub struct InvalidParam {
    /// The parameter's name, as in the spec's `[procedure]` table.
    pub param: &'static str,
    /// What is wrong with it and what is expected instead.
    pub problem: String,
}

impl InvalidParam {
    pub(crate) fn new(param: &'static str, problem: impl Into<String>) -> Self {
        InvalidParam { param, problem: problem.into() }
    }
}
