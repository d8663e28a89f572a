//! An anchor's libp2p identity: generated on first start, kept in the data dir (mode 0600).

use std::collections::BTreeMap;
use std::path::Path;

use libp2p::identity::Keypair;
use libp2p::PeerId;
use proto::AnchorInfo;

use crate::raft::NodeId;
use crate::AnchorError;

const KEY_FILE: &str = "identity.key";

/// Loads the keypair from `data_dir/identity.key`, creating it on first start.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, AnchorError> {
    let path = data_dir.join(KEY_FILE);
    let io = |source| AnchorError::Io {
        path: path.display().to_string(),
        source,
    };
    if path.exists() {
        let bytes = std::fs::read(&path).map_err(io)?;
        return Keypair::from_protobuf_encoding(&bytes)
            .map_err(|e| AnchorError::Corrupt(format!("{}: {e}", path.display())));
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| AnchorError::Corrupt(e.to_string()))?;
    let tmp = data_dir.join(format!("{KEY_FILE}.tmp"));
    std::fs::write(&tmp, bytes).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(key)
}

/// The Raft node id of an anchor: the first 8 bytes of blake3(peer id).
pub fn node_id(peer: &PeerId) -> NodeId {
    let h = blake3::hash(&peer.to_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_be_bytes(b)
}

/// Same, from the text form of a peer id.
pub fn node_id_of_str(peer: &str) -> Option<NodeId> {
    peer.parse::<PeerId>().ok().map(|p| node_id(&p))
}

/// A scope's members as Raft nodes, by node id.
pub fn raft_members(members: &[AnchorInfo]) -> Result<BTreeMap<NodeId, AnchorInfo>, AnchorError> {
    members
        .iter()
        .map(|m| {
            node_id_of_str(&m.peer_id)
                .map(|id| (id, m.clone()))
                .ok_or_else(|| AnchorError::BadMember {
                    peer_id: m.peer_id.clone(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
    }
}
