//! Where the cluster is: the `--anchor` list every cluster command takes, read with the one
//! anchor-address parser ([`AnchorAddr`]), and the clients built from it.

use anyhow::{Context, Result};
use clap::Args;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use proto::AnchorInfo;
use resolver::AnchorAddr;

/// Where the cluster is: trust anchors as multiaddrs ending in `/p2p/<peer id>`.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// An anchor to talk to (repeatable); defaults to $ANCHORAGE_ANCHORS (comma-separated).
    #[arg(
        long = "anchor",
        env = "ANCHORAGE_ANCHORS",
        value_delimiter = ',',
        required = true
    )]
    pub anchors: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl Target {
    /// The anchors given, parsed.
    pub fn anchor_addrs(&self) -> Result<Vec<AnchorAddr>> {
        anchor_list(&self.anchors)
    }

    /// A client whose trust anchors are the target's anchors.
    pub async fn client(&self) -> Result<resolver::Client> {
        let addrs: Vec<Multiaddr> = self.anchor_addrs()?.iter().map(dial_multiaddr).collect();
        Ok(resolver::Client::connect(&addrs, resolver::ClientConfig::default()).await?)
    }

    /// The trust anchors as [`AnchorInfo`] (peer id, dialable address).
    pub fn trust_infos(&self) -> Result<Vec<AnchorInfo>> {
        Ok(self
            .anchor_addrs()?
            .iter()
            .map(AnchorAddr::to_info)
            .collect())
    }
}

/// Anchors given on the command line, each read with [`AnchorAddr::parse`]; empty entries
/// (a trailing comma) are skipped, and an error names the anchor it is about.
pub fn anchor_list(list: &[String]) -> Result<Vec<AnchorAddr>> {
    list.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| AnchorAddr::parse(s).with_context(|| format!("anchor {s:?}")))
        .collect()
}

/// The anchor as one multiaddr ending in `/p2p/<peer id>`, as [`resolver::Client::connect`]
/// takes its trust anchors.
pub fn dial_multiaddr(anchor: &AnchorAddr) -> Multiaddr {
    let mut addr = anchor
        .addrs
        .first()
        .cloned()
        .unwrap_or_else(Multiaddr::empty);
    addr.push(Protocol::P2p(anchor.peer));
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_round_trip_and_errors_name_the_anchor() {
        let peer = libp2p::PeerId::random();
        let given = format!("/ip4/127.0.0.1/tcp/7401/p2p/{peer}");
        let list = vec![given.clone(), " ".into()];
        let addrs = anchor_list(&list).unwrap();
        assert_eq!(addrs.len(), 1);
        assert_eq!(dial_multiaddr(&addrs[0]).to_string(), given);
        let err = anchor_list(&["/ip4/127.0.0.1/tcp/7401".into()]).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("anchor \"/ip4/127.0.0.1/tcp/7401\": "),
            "{text}"
        );
        assert!(text.contains("/p2p/<peer id>"), "{text}");
    }
}
