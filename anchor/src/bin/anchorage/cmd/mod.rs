//! One module per command (or family of commands) of the `anchorage` binary. Each parses
//! nothing itself beyond its clap arguments, talks to the cluster, and prints through
//! [`crate::render`].

use anyhow::{Context, Result};
use proto::Name;

pub mod bench;
pub mod dev;
pub mod init;
pub mod keygen;
pub mod policy;
pub mod put;
pub mod resolve;
pub mod scope;
pub mod snapshot;
pub mod start;
pub mod status;
pub mod watch;

/// A name given on the command line.
pub fn parse_name(text: &str) -> Result<Name> {
    Name::parse(text).with_context(|| format!("{text:?} is not a name"))
}
