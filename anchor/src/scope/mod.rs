//! Scope logic that does no IO: deciding what a command does to a scope's state, and
//! deciding when a scope should change its shape.
//!
//! The state machine (`crate::raft::sm`) reads state through [`decide::ScopeRead`] and
//! writes the [`decide::Effect`] it is given; the leader runs the same decision before it
//! proposes, so a mutation is checked against policy twice (once before proposing, once in
//! log order at apply). Delegation decisions (`Moving`, `Delegated`) live in [`decide`] too.
//!
//! # Layout
//! - [`decide`] — the decision for one mutation or delegation step.
//! - [`learn`] — the proof check of a range a delegated child split off, and the
//!   refinement of a delegation by the ranges learned under it.
//! - [`rate`] — the request-rate meter behind `scope tree`'s load column.
//! - [`sig_cache`] — signatures already checked.
//! - [`load`] — a scope's load and size accounting for splits: 1 s rates, the retained
//!   peak, the hold, follower reports, child-label shares.
//! - [`sampler`] — the split-key sampler (reservoir of candidate keys, left/right counts).
//! - [`split`] — the split decider ([`split::decide`]) and the apply-time check
//!   ([`split::justify`]).
//! - [`verdict`] — the deciders' verdicts in words: [`verdict::Reason`] (why not now) and
//!   [`verdict::Refusal`] (why a member refuses at apply).
//! - [`meter`] — a hosted replica's load meters (the rate meter and the split accounting)
//!   behind one lock, fed by the request handlers.
//! - [`show`] — the split view `scope show` prints: load, size, split key, decision.
//! - [`merge`] — the merge decider ([`merge::decide_merge`]) and its apply-time check
//!   ([`merge::justify_merge`]).
//! - [`merge_plan`] — the verdict for a parent and a child it split off: the merge decider,
//!   then a check that the split decider would not split the merged scope right back.
//! - [`quiesce`] — quiescence of idle scopes: when a leader may sleep, when a follower
//!   agrees, which anchors count as dead, how the survivors of a dead leader elect.
//! - [`watch_children`] — the child scopes a watch of a prefix must follow besides the
//!   scope it asks.
//! - [`place`] — placement decided locally: repairs, leadership and replica balance.
//! - [`members`] — member changes: whether one may start, its target, the leader's next
//!   step, and the proof a parent needs to refer to a child's new members.
//!
//! Every resolve and mutation a replica serves is recorded into its [`meter`], and
//! `scope show` and the per-scope load gauges read it through [`show`]. Subtree splits are
//! proposed by the delegation code's splitter and executed as delegations to the same
//! members; a subtree split off that way merges back by the delegation code's merger; range
//! splits and their merges are decided and shown only.

pub mod decide;
pub mod forget;
pub mod learn;
pub mod load;
pub mod members;
pub mod merge;
pub mod merge_plan;
pub mod meter;
pub mod place;
pub mod quiesce;
pub mod rate;
pub mod sampler;
pub mod show;
pub mod sig_cache;
pub mod split;
pub mod verdict;
pub mod watch_children;
