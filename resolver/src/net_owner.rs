//! The client's ownership of its network task: a [`NetOwner`] stops the libp2p swarm when
//! it is dropped. A client and each of its watches hold it in an `Arc`, so the swarm stops
//! when the last clone of the client and the last watch are gone, and not before.

use std::ops::Deref;

use crate::net::NetHandle;

/// A [`NetHandle`] whose drop stops the swarm task.
#[derive(Debug)]
pub(crate) struct NetOwner(NetHandle);

impl NetOwner {
    /// Takes ownership of the swarm behind `net`.
    pub fn new(net: NetHandle) -> NetOwner {
        NetOwner(net)
    }
}

impl Deref for NetOwner {
    type Target = NetHandle;

    fn deref(&self) -> &NetHandle {
        &self.0
    }
}

impl Drop for NetOwner {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}
