//! `anchorage scope ...`: inspect the scope hierarchy (`tree`, `show`), delegate a subtree
//! to a child scope (`delegate`), split a scope onto its own anchors (`split`), merge a
//! split-off scope back (`merge`), and change the anchors that hold a scope (`move`,
//! `add-anchor`, `remove-anchor`).

use anyhow::Result;
use clap::Subcommand;

use crate::target::Target;

pub mod delegate;
pub mod fetch;
pub mod members;
pub mod merge;
pub mod show;
pub mod split;
pub mod tree;

/// `anchorage scope ...`
#[derive(Subcommand, Debug)]
pub enum ScopeCmd {
    /// Show the scope hierarchy as a tree from the root: members, leader, names, load.
    Tree {
        /// Where the cluster is.
        #[command(flatten)]
        target: Target,
    },
    /// Describe one scope: by prefix (`/eu`, the scope governing it) or by id (hex, or a
    /// unique leading part of it as `scope tree` prints it).
    Show {
        /// A name starting with '/', or a scope id in hex.
        scope: String,
        /// Where the cluster is.
        #[command(flatten)]
        target: Target,
    },
    /// Delegate the subtree PREFIX to a new child scope on the given anchors.
    Delegate(delegate::DelegateArgs),
    /// Split the subtree PREFIX off the scope governing it, or with --at cut that scope's
    /// range, onto the same anchors (admin-signed; scopes with `[split] auto` do this
    /// themselves).
    Split(split::SplitArgs),
    /// Merge the scope governing NAME back into the scope it was split off (its parent, or
    /// the range before it), on the same anchors (admin-signed; scopes with `[merge] auto`
    /// do this themselves).
    Merge(merge::MergeArgs),
    /// Move the scope governing SCOPE from one anchor to another (admin-signed): the new
    /// anchor joins as a learner, votes once it caught up, and the old one leaves and drops
    /// its replica.
    Move(members::MoveArgs),
    /// Add an anchor to the scope governing SCOPE (admin-signed).
    AddAnchor(members::AddArgs),
    /// Remove an anchor from the scope governing SCOPE (admin-signed); it drops its replica.
    RemoveAnchor(members::RemoveArgs),
}

/// Runs `anchorage scope ...`.
pub async fn run(cmd: ScopeCmd) -> Result<()> {
    match cmd {
        ScopeCmd::Tree { target } => tree::run(&target).await,
        ScopeCmd::Show { scope, target } => show::run(&target, &scope).await,
        ScopeCmd::Delegate(args) => delegate::run(args).await,
        ScopeCmd::Split(args) => split::run(args).await,
        ScopeCmd::Merge(args) => merge::run(args).await,
        ScopeCmd::Move(args) => members::run_move(args).await,
        ScopeCmd::AddAnchor(args) => members::run_add(args).await,
        ScopeCmd::RemoveAnchor(args) => members::run_remove(args).await,
    }
}
