//! Scope logic that does no IO: deciding what a command does to a scope's state.
//!
//! The state machine (`crate::raft::sm`) reads state through [`decide::ScopeRead`] and
//! writes the [`decide::Effect`] it is given; the leader runs the same decision before it
//! proposes, so a mutation is checked against policy twice (once before proposing, once in
//! log order at apply). Delegation decisions (`Moving`, `Delegated`) live in [`decide`] too.
//! [`rate`] counts requests per scope; [`sig_cache`] remembers signatures already checked.

pub mod decide;
pub mod rate;
pub mod sig_cache;
