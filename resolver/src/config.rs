//! [`ClientConfig`]: how a client behaves (timeouts, attempts, mutation validity, cache
//! sizes, its wall clock), the bounds each value is checked against, and the parsing of
//! the trust anchors a client starts from.

use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use proto::limits::MUTATION_VALIDITY_MS_MAX;

use crate::addr::AnchorAddr;
use crate::clock::{self, SharedClock};
use crate::error::Error;
use crate::members::KNOWN_ANCHORS_MAX;

/// Largest `attempts_max` a [`ClientConfig`] may set.
pub const ATTEMPTS_MAX_LIMIT: u32 = 100;
/// How a [`Client`](crate::Client) behaves. Build it with `ClientConfig { field: value, ..Default::default() }`.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// How long one request to one anchor may take.
    pub request_timeout: Duration,
    /// How long one call (all its attempts, redirects and referral hops together) may take.
    pub operation_timeout: Duration,
    /// Requests one call may send to one scope in all, redirects included
    /// (1..=[`ATTEMPTS_MAX_LIMIT`]).
    pub attempts_max: u32,
    /// How long a mutation built by this client stays valid: its `expires_at_ms` is now
    /// plus this. At most [`MUTATION_VALIDITY_MS_MAX`] ms. A mutation call gives up retrying
    /// once its mutation has expired.
    pub mutation_validity: Duration,
    /// Record sets the answer cache holds (0 disables it).
    pub cache_entries_max: usize,
    /// Referrals the referral cache holds (0 disables it: every walk starts at the root).
    pub referral_entries_max: usize,
    /// The wall clock mutations' expiry is set and checked by ([`clock::system`] by
    /// default; a test gives a [`clock::ManualClock`]).
    pub clock: SharedClock,
}

/// Two configurations are equal when every bound is and they share one clock (every
/// [`clock::system`] is the same one).
impl PartialEq for ClientConfig {
    fn eq(&self, other: &ClientConfig) -> bool {
        self.request_timeout == other.request_timeout
            && self.operation_timeout == other.operation_timeout
            && self.attempts_max == other.attempts_max
            && self.mutation_validity == other.mutation_validity
            && self.cache_entries_max == other.cache_entries_max
            && self.referral_entries_max == other.referral_entries_max
            && Arc::ptr_eq(&self.clock, &other.clock)
    }
}

impl Eq for ClientConfig {}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            request_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
            attempts_max: 24,
            mutation_validity: Duration::from_secs(60),
            cache_entries_max: 10_000,
            referral_entries_max: 1_024,
            clock: clock::system(),
        }
    }
}

impl ClientConfig {
    pub(crate) fn check(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::BadConfig { reason });
        if self.request_timeout.is_zero() || self.operation_timeout.is_zero() {
            return bad("request_timeout and operation_timeout must be above zero".into());
        }
        if self.attempts_max == 0 || self.attempts_max > ATTEMPTS_MAX_LIMIT {
            let n = self.attempts_max;
            return bad(format!(
                "attempts_max is {n}; it must be 1..={ATTEMPTS_MAX_LIMIT}"
            ));
        }
        let validity_ms = self.mutation_validity.as_millis();
        if validity_ms == 0 || validity_ms > u128::from(MUTATION_VALIDITY_MS_MAX) {
            return bad(format!(
                "mutation_validity is {validity_ms} ms; it must be 1..={MUTATION_VALIDITY_MS_MAX} ms"
            ));
        }
        Ok(())
    }
}

/// The trust anchors given to [`crate::Client::connect`], one entry per peer (several
/// addresses of one peer are merged).
pub(crate) fn parse_trust_anchors(addrs: &[Multiaddr]) -> Result<Vec<AnchorAddr>, Error> {
    if addrs.is_empty() {
        return Err(Error::BadConfig {
            reason: "no trust anchors: give at least one root-scope anchor as \
                     /…/p2p/<peer id>"
                .into(),
        });
    }
    let mut anchors: Vec<AnchorAddr> = Vec::new();
    for addr in addrs {
        let given = AnchorAddr::from_multiaddr(addr).map_err(|e| Error::BadTrustAnchor {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        match anchors.iter_mut().find(|a| a.peer == given.peer) {
            Some(known) => known.merge_addrs(&given.addrs),
            None => anchors.push(given),
        }
    }
    if anchors.len() > KNOWN_ANCHORS_MAX {
        return Err(Error::BadConfig {
            reason: format!(
                "{} trust anchors; at most {KNOWN_ANCHORS_MAX}",
                anchors.len()
            ),
        });
    }
    Ok(anchors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::PeerId;

    #[test]
    fn config_bounds_are_checked() {
        assert!(ClientConfig::default().check().is_ok());
        assert_eq!(ClientConfig::default(), ClientConfig::default());
        let too_long = ClientConfig {
            mutation_validity: Duration::from_millis(MUTATION_VALIDITY_MS_MAX + 1),
            ..Default::default()
        };
        assert!(matches!(too_long.check(), Err(Error::BadConfig { .. })));
        let no_attempts = ClientConfig {
            attempts_max: 0,
            ..Default::default()
        };
        assert!(no_attempts.check().is_err());
    }

    #[test]
    fn trust_anchors_are_parsed_and_merged() {
        let peer = PeerId::random();
        let a: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}").parse().unwrap();
        let b: Multiaddr = format!("/ip4/127.0.0.2/tcp/1/p2p/{peer}").parse().unwrap();
        let anchors = parse_trust_anchors(&[a.clone(), b, a]).unwrap();
        assert_eq!(anchors.len(), 1);
        assert_eq!(anchors[0].addrs.len(), 2);
        let bare: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert!(matches!(
            parse_trust_anchors(&[bare]),
            Err(Error::BadTrustAnchor { .. })
        ));
        assert!(matches!(
            parse_trust_anchors(&[]),
            Err(Error::BadConfig { .. })
        ));
    }
}
