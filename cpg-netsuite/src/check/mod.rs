//! Checking what the processes logged: the safety invariants
//! ([`check`]) and the liveness measures ([`liveness`]).

pub mod liveness;
mod safety;

pub use safety::{check, Facts, MsgId, Violation};

#[cfg(test)]
mod tests;
