//! Operator calls to specific anchors over the admin protocol: ask an anchor for its status,
//! have it snapshot its scopes, and create the root scope of a new cluster.
//!
//! [`Operator`] is a short-lived client swarm; every request goes through
//! [`NetHandle::call`] to one [`AnchorAddr`]. The `anchorage` command line and the test
//! harnesses use it; errors are [`OperatorError`], each naming the anchor concerned.

use std::time::Duration;

use libp2p::Multiaddr;
use proto::msg::{AdminRequest, AdminResponse, AnchorStatus, WireError};
use proto::{AnchorInfo, Name, ScopeDescriptor, ScopeId};
use resolver::net::{self, CallError, NetConfig, NetError, NetHandle, Protocol};
use resolver::{AddrError, AnchorAddr};

/// How long an admin call waits for its answer.
pub const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an operator call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorError {
    /// The client swarm could not start.
    #[error(transparent)]
    Setup(NetError),
    /// An address that does not name an anchor to dial.
    #[error("anchor {addr}: {source}")]
    Addr {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        source: AddrError,
    },
    /// The anchor did not answer in time.
    #[error("{anchor} did not answer within {} s", .timeout.as_secs())]
    Timeout {
        /// The anchor asked.
        anchor: Box<AnchorAddr>,
        /// How long we waited.
        timeout: Duration,
    },
    /// The request could not be sent, delivered or its answer read.
    #[error(transparent)]
    Call(CallError),
    /// The anchor answered with an error.
    #[error("{anchor}: {reason}")]
    Refused {
        /// The anchor asked.
        anchor: Box<AnchorAddr>,
        /// What it said.
        reason: WireError,
    },
    /// The anchor answered with something else than the request calls for.
    #[error("{anchor}: unexpected answer {answer}")]
    Unexpected {
        /// The anchor asked.
        anchor: Box<AnchorAddr>,
        /// The answer, debug-printed.
        answer: String,
    },
    /// The root policy does not parse or is not valid.
    #[error("the root policy is invalid")]
    InvalidPolicy(#[source] policy::PolicyError),
    /// Too few or too many anchors for a scope.
    #[error("init needs 1..={max} anchors")]
    MemberCount {
        /// How many were given.
        given: usize,
        /// The most a scope may have.
        max: usize,
    },
    /// An anchor already hosts the root scope.
    #[error("{anchor} already hosts the root scope: this cluster is initialized (init runs once)")]
    AlreadyInitialized {
        /// The anchor that hosts it.
        anchor: Box<AnchorAddr>,
    },
}

/// A short-lived client swarm for operator calls to specific anchors.
pub struct Operator {
    net: NetHandle,
}

impl Operator {
    /// Starts a client swarm; it stops when the `Operator` is dropped.
    pub fn new() -> Result<Operator, OperatorError> {
        let (net, _) = net::spawn(NetConfig::client()).map_err(OperatorError::Setup)?;
        Ok(Operator { net })
    }

    /// Sends one admin request to `anchor` and waits up to [`ADMIN_CALL_TIMEOUT`].
    pub async fn call(
        &self,
        anchor: &AnchorAddr,
        req: &AdminRequest,
    ) -> Result<AdminResponse, OperatorError> {
        self.net
            .call(anchor, Protocol::Admin, req, ADMIN_CALL_TIMEOUT)
            .await
            .map_err(|e| match e {
                CallError::Timeout { .. } => OperatorError::Timeout {
                    anchor: Box::new(anchor.clone()),
                    timeout: ADMIN_CALL_TIMEOUT,
                },
                other => OperatorError::Call(other),
            })
    }

    /// The status of `anchor`.
    pub async fn status(&self, anchor: &AnchorAddr) -> Result<AnchorStatus, OperatorError> {
        match self.call(anchor, &AdminRequest::Status).await? {
            AdminResponse::Status(s) => Ok(s),
            other => Err(refusal(anchor, other)),
        }
    }

    /// Has `anchor` snapshot every scope it hosts and purge its log.
    pub async fn snapshot(&self, anchor: &AnchorAddr) -> Result<(), OperatorError> {
        match self.call(anchor, &AdminRequest::Snapshot).await? {
            AdminResponse::Ok => Ok(()),
            other => Err(refusal(anchor, other)),
        }
    }

    /// Creates the root scope on `anchors` with the given policy: asks each for its status
    /// (refusing if one already hosts the root), then creates the scope on each, the first
    /// one last and bootstrapping the group.
    pub async fn init_root(
        &self,
        anchors: &[AnchorAddr],
        policy_toml: String,
    ) -> Result<ScopeId, OperatorError> {
        check_root(anchors.len(), &policy_toml)?;
        let mut members = Vec::new();
        for a in anchors {
            let s = self.status(a).await?;
            if s.scopes.iter().any(|sc| sc.id == ScopeId::root()) {
                return Err(OperatorError::AlreadyInitialized {
                    anchor: Box::new(a.clone()),
                });
            }
            members.push(AnchorInfo {
                peer_id: s.peer_id,
                addrs: s.addrs,
            });
        }
        let descriptor = ScopeDescriptor {
            id: ScopeId::root(),
            prefix: Name::root(),
            epoch: 1,
            members,
            range: proto::KeyRange::all(),
        };
        for (i, a) in anchors.iter().enumerate().rev() {
            let req = AdminRequest::CreateScope {
                descriptor: descriptor.clone(),
                policy_toml: policy_toml.clone(),
                bootstrap: i == 0,
            };
            match self.call(a, &req).await? {
                AdminResponse::Ok => {}
                other => return Err(refusal(a, other)),
            }
        }
        Ok(descriptor.id)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.net.shutdown();
    }
}

/// Creates the root scope on the anchors at `addrs` (each ending in `/p2p/<peer id>`) with
/// the given policy, through a client swarm of its own: [`Operator::init_root`].
pub async fn init_root(addrs: &[Multiaddr], policy_toml: String) -> Result<ScopeId, OperatorError> {
    check_root(addrs.len(), &policy_toml)?;
    let anchors = addrs
        .iter()
        .map(|a| {
            AnchorAddr::from_multiaddr(a).map_err(|source| OperatorError::Addr {
                addr: a.to_string(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Operator::new()?.init_root(&anchors, policy_toml).await
}

/// The checks of a root scope that need no network: a valid policy, a possible member count.
fn check_root(anchors: usize, policy_toml: &str) -> Result<(), OperatorError> {
    policy::Policy::from_toml(policy_toml).map_err(OperatorError::InvalidPolicy)?;
    let max = proto::limits::SCOPE_MEMBERS_MAX;
    if anchors == 0 || anchors > max {
        return Err(OperatorError::MemberCount {
            given: anchors,
            max,
        });
    }
    Ok(())
}

/// An answer that is not the one asked for: the anchor's error, or an unexpected answer.
fn refusal(anchor: &AnchorAddr, answer: AdminResponse) -> OperatorError {
    match answer {
        AdminResponse::Error(reason) => OperatorError::Refused {
            anchor: Box::new(anchor.clone()),
            reason,
        },
        other => OperatorError::Unexpected {
            anchor: Box::new(anchor.clone()),
            answer: format!("{other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor() -> AnchorAddr {
        AnchorAddr {
            peer: libp2p::PeerId::random(),
            addrs: vec!["/ip4/127.0.0.1/tcp/7401".parse().unwrap()],
        }
    }

    #[test]
    fn a_root_needs_a_valid_policy_and_a_possible_member_count() {
        let dev = policy::Policy::development(None).to_toml();
        assert!(check_root(1, &dev).is_ok());
        assert!(matches!(
            check_root(0, &dev),
            Err(OperatorError::MemberCount { given: 0, .. })
        ));
        let many = proto::limits::SCOPE_MEMBERS_MAX + 1;
        let e = check_root(many, &dev).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "init needs 1..={} anchors",
                proto::limits::SCOPE_MEMBERS_MAX
            )
        );
        let e = check_root(1, "not toml [").unwrap_err();
        assert!(matches!(e, OperatorError::InvalidPolicy(_)));
        assert_eq!(e.to_string(), "the root policy is invalid");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn wrong_answers_name_the_anchor() {
        let a = anchor();
        let e = refusal(
            &a,
            AdminResponse::Error(WireError::Invalid {
                reason: "no".into(),
            }),
        );
        assert_eq!(e.to_string(), format!("{a}: invalid request: no"));
        let e = refusal(&a, AdminResponse::Ok);
        assert_eq!(e.to_string(), format!("{a}: unexpected answer Ok"));
        let e = OperatorError::Timeout {
            anchor: Box::new(a.clone()),
            timeout: ADMIN_CALL_TIMEOUT,
        };
        assert_eq!(e.to_string(), format!("{a} did not answer within 30 s"));
    }

    #[tokio::test]
    async fn init_root_refuses_an_address_without_its_peer() {
        let dev = policy::Policy::development(None).to_toml();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/7401".parse().unwrap();
        let e = init_root(&[addr], dev).await.unwrap_err();
        assert!(matches!(e, OperatorError::Addr { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("anchor /ip4/127.0.0.1/tcp/7401: "),
            "{e}"
        );
    }
}
