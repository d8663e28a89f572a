//! Scope logic that does no IO: deciding what a command does to a scope's state.
//!
//! The state machine (`crate::raft::state_machine`) reads state through [`apply::ScopeRead`]
//! and writes the [`apply::Effect`] it is given; the leader runs the same decision before it
//! proposes, so a mutation is checked against policy twice (DESIGN.md §5). Delegation
//! decisions (`Moving`, `Delegated`, child ids) live in [`apply`] too; [`load`] counts
//! requests per scope.

pub mod apply;
pub mod load;
pub mod verified;
