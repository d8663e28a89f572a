//! `anchorage scope ...`: inspect the scope hierarchy (`tree`, `show`) and delegate a
//! subtree to a child scope (`delegate`).

use anyhow::Result;
use clap::Subcommand;

use crate::target::Target;

pub mod delegate;
pub mod fetch;
pub mod show;
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
}

/// Runs `anchorage scope ...`.
pub async fn run(cmd: ScopeCmd) -> Result<()> {
    match cmd {
        ScopeCmd::Tree { target } => tree::run(&target).await,
        ScopeCmd::Show { scope, target } => show::run(&target, &scope).await,
        ScopeCmd::Delegate(args) => delegate::run(args).await,
    }
}
