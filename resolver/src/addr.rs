//! One remote anchor as something to dial: its peer id and its transport addresses.
//!
//! Every place that reads an anchor's address goes through [`AnchorAddr`]: a trust anchor or
//! a CLI argument given as `/ip4/…/tcp/…/p2p/<peer id>` ([`AnchorAddr::parse`],
//! [`AnchorAddr::from_multiaddr`]), and an [`AnchorInfo`] received over the wire (a member
//! list, a leader hint) with [`AnchorAddr::from_info`]. Addresses are kept without their
//! `/p2p` suffix; the peer id is kept apart.

use std::fmt;
use std::str::FromStr;

use libp2p::multiaddr::Protocol as AddrProtocol;
use libp2p::{Multiaddr, PeerId};
use proto::limits::{ADDR_BYTES_MAX, ANCHOR_ADDRS_MAX};
use proto::AnchorInfo;

/// An anchor to dial: who it is and where (addresses without the `/p2p` suffix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnchorAddr {
    /// Its libp2p peer id (also its name).
    pub peer: PeerId,
    /// Where to dial it; at most [`ANCHOR_ADDRS_MAX`].
    pub addrs: Vec<Multiaddr>,
}

/// Why an anchor address was refused. The message says what is wrong; the caller says
/// which address (it is in the variant too).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddrError {
    /// Not a multiaddr at all.
    #[error("not a multiaddr ({reason}); give /ip4/<ip>/tcp/<port>/p2p/<peer id>")]
    NotMultiaddr {
        /// What was given.
        addr: String,
        /// What the parser said.
        reason: String,
    },
    /// No `/p2p/<peer id>` at the end.
    #[error("it does not end in /p2p/<peer id> (see `anchorage status` or the anchor's log)")]
    NoPeer {
        /// What was given.
        addr: String,
    },
    /// Only `/p2p/<peer id>`, nothing to dial.
    #[error("no transport address before /p2p; give /ip4/<ip>/tcp/<port>/p2p/<peer id>")]
    NoTransport {
        /// What was given.
        addr: String,
    },
    /// A peer id that does not parse.
    #[error("peer id {peer_id:?} is not a libp2p peer id: {reason}")]
    BadPeerId {
        /// What was given.
        peer_id: String,
        /// What the parser said.
        reason: String,
    },
}

impl AnchorAddr {
    /// Reads `/…/p2p/<peer id>`: a transport address followed by the peer id.
    pub fn parse(s: &str) -> Result<AnchorAddr, AddrError> {
        let s = s.trim();
        let addr = Multiaddr::from_str(s).map_err(|e| AddrError::NotMultiaddr {
            addr: s.to_string(),
            reason: e.to_string(),
        })?;
        AnchorAddr::from_multiaddr(&addr)
    }

    /// Splits `/…/p2p/<peer id>` into the peer and the dialable address before it.
    pub fn from_multiaddr(addr: &Multiaddr) -> Result<AnchorAddr, AddrError> {
        let mut rest = addr.clone();
        match rest.pop() {
            Some(AddrProtocol::P2p(peer)) if !rest.is_empty() => Ok(AnchorAddr {
                peer,
                addrs: vec![rest],
            }),
            Some(AddrProtocol::P2p(_)) => Err(AddrError::NoTransport {
                addr: addr.to_string(),
            }),
            _ => Err(AddrError::NoPeer {
                addr: addr.to_string(),
            }),
        }
    }

    /// Reads an anchor received over the wire. The peer id must parse; addresses that do
    /// not parse, are longer than [`ADDR_BYTES_MAX`] or name another peer are skipped, and
    /// at most [`ANCHOR_ADDRS_MAX`] are kept (an anchor with none left is still returned:
    /// a connection to it may already be open).
    pub fn from_info(info: &AnchorInfo) -> Result<AnchorAddr, AddrError> {
        let peer = PeerId::from_str(&info.peer_id).map_err(|e| AddrError::BadPeerId {
            peer_id: info.peer_id.clone(),
            reason: e.to_string(),
        })?;
        let addrs = info
            .addrs
            .iter()
            .filter(|a| a.len() <= ADDR_BYTES_MAX)
            .filter_map(|a| Multiaddr::from_str(a).ok())
            .filter_map(|a| without_p2p(a, peer))
            .take(ANCHOR_ADDRS_MAX)
            .collect();
        Ok(AnchorAddr { peer, addrs })
    }

    /// The wire form.
    pub fn to_info(&self) -> AnchorInfo {
        AnchorInfo {
            peer_id: self.peer.to_string(),
            addrs: self.addrs.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Adds addresses not yet known, up to [`ANCHOR_ADDRS_MAX`].
    pub fn merge_addrs(&mut self, addrs: &[Multiaddr]) {
        for a in addrs {
            if !self.addrs.contains(a) && self.addrs.len() < ANCHOR_ADDRS_MAX {
                self.addrs.push(a.clone());
            }
        }
    }
}

impl FromStr for AnchorAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<AnchorAddr, AddrError> {
        AnchorAddr::parse(s)
    }
}

impl fmt::Display for AnchorAddr {
    /// The first address with the peer id appended (`/ip4/…/p2p/<peer>`), or `/p2p/<peer>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addrs.first() {
            Some(a) => write!(f, "{a}/p2p/{}", self.peer),
            None => write!(f, "/p2p/{}", self.peer),
        }
    }
}

/// The address without a trailing `/p2p/<peer>`; `None` when that names another peer.
fn without_p2p(mut addr: Multiaddr, peer: PeerId) -> Option<Multiaddr> {
    match addr.iter().last() {
        Some(AddrProtocol::P2p(p)) if p != peer => None,
        Some(AddrProtocol::P2p(_)) => {
            addr.pop();
            Some(addr)
        }
        _ => Some(addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn parses_a_dialable_address_with_its_peer() {
        let p = peer();
        let a = AnchorAddr::parse(&format!(" /ip4/10.0.0.1/tcp/4001/p2p/{p} ")).unwrap();
        assert_eq!(a.peer, p);
        assert_eq!(a.addrs, vec!["/ip4/10.0.0.1/tcp/4001".parse().unwrap()]);
        assert_eq!(a.to_string(), format!("/ip4/10.0.0.1/tcp/4001/p2p/{p}"));
        assert_eq!(a.to_string().parse::<AnchorAddr>().unwrap(), a);
    }

    #[test]
    fn refuses_what_cannot_be_dialed_with_the_rule_broken() {
        let p = peer();
        assert!(matches!(
            AnchorAddr::parse("/ip4/10.0.0.1/tcp/4001"),
            Err(AddrError::NoPeer { .. })
        ));
        assert!(matches!(
            AnchorAddr::parse(&format!("/p2p/{p}")),
            Err(AddrError::NoTransport { .. })
        ));
        assert!(matches!(
            AnchorAddr::parse("10.0.0.1:4001"),
            Err(AddrError::NotMultiaddr { .. })
        ));
    }

    #[test]
    fn wire_anchors_keep_their_good_addresses_only() {
        let p = peer();
        let other = peer();
        let info = AnchorInfo {
            peer_id: p.to_string(),
            addrs: vec![
                "/ip4/10.0.0.1/tcp/1".into(),
                format!("/ip4/10.0.0.2/tcp/2/p2p/{p}"),
                format!("/ip4/10.0.0.3/tcp/3/p2p/{other}"),
                "garbage".into(),
                format!("/dns4/{}/tcp/4", "a".repeat(ADDR_BYTES_MAX)),
            ],
        };
        let a = AnchorAddr::from_info(&info).unwrap();
        assert_eq!(a.peer, p);
        let want: Vec<Multiaddr> = vec![
            "/ip4/10.0.0.1/tcp/1".parse().unwrap(),
            "/ip4/10.0.0.2/tcp/2".parse().unwrap(),
        ];
        assert_eq!(a.addrs, want);
        assert_eq!(AnchorAddr::from_info(&a.to_info()).unwrap(), a);
        let bad = AnchorInfo {
            peer_id: "nope".into(),
            addrs: vec![],
        };
        assert!(matches!(
            AnchorAddr::from_info(&bad),
            Err(AddrError::BadPeerId { .. })
        ));
    }

    #[test]
    fn at_most_the_limit_of_addresses_is_kept() {
        let p = peer();
        let info = AnchorInfo {
            peer_id: p.to_string(),
            addrs: (0..ANCHOR_ADDRS_MAX + 5)
                .map(|i| format!("/ip4/10.0.0.1/tcp/{}", 1000 + i))
                .collect(),
        };
        let mut a = AnchorAddr::from_info(&info).unwrap();
        assert_eq!(a.addrs.len(), ANCHOR_ADDRS_MAX);
        a.merge_addrs(&["/ip4/10.9.9.9/tcp/1".parse().unwrap()]);
        assert_eq!(a.addrs.len(), ANCHOR_ADDRS_MAX);
    }

    #[test]
    fn anchor_info_is_read_leniently_but_bounded() {
        let peer = PeerId::random();
        let other = PeerId::random();
        let mut addrs = vec![
            "/ip4/127.0.0.1/tcp/1".to_string(),
            format!("/ip4/127.0.0.1/tcp/2/p2p/{peer}"),
            format!("/ip4/127.0.0.1/tcp/3/p2p/{other}"),
            "not an address".to_string(),
        ];
        addrs.extend((10..40).map(|p| format!("/ip4/127.0.0.1/tcp/{p}")));
        let info = AnchorInfo {
            peer_id: peer.to_base58(),
            addrs,
        };
        let a = AnchorAddr::from_info(&info).unwrap();
        assert_eq!(a.peer, peer);
        assert_eq!(a.addrs.len(), ANCHOR_ADDRS_MAX);
        assert_eq!(
            a.addrs[1],
            "/ip4/127.0.0.1/tcp/2".parse::<Multiaddr>().unwrap()
        );
        assert!(AnchorAddr::from_info(&AnchorInfo {
            peer_id: "nope".into(),
            addrs: vec![]
        })
        .is_err());
    }

    #[test]
    fn trust_anchor_addresses_must_end_in_p2p() {
        let peer = PeerId::random();
        let addr: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{peer}")
            .parse()
            .unwrap();
        let a = AnchorAddr::from_multiaddr(&addr).unwrap();
        let (p, dial) = (a.peer, a.addrs[0].clone());
        assert_eq!(p, peer);
        assert_eq!(dial, "/ip4/10.0.0.1/tcp/4001".parse::<Multiaddr>().unwrap());
        assert!(AnchorAddr::from_multiaddr(&"/ip4/10.0.0.1/tcp/4001".parse().unwrap()).is_err());
        assert!(AnchorAddr::from_multiaddr(&format!("/p2p/{peer}").parse().unwrap()).is_err());
    }
}
